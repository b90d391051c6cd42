"""Three ways to drive the system's headless Chromium from Python, measured side by side:

- pipe:       the DevTools protocol on a pipe (--remote-debugging-pipe), through the project's
              own client, tinygpt_bench.browser.Chromium (stdlib only);
- websocket:  the DevTools protocol on a websocket (--remote-debugging-port=0, the URL read from
              the browser's stderr), one kept connection through the `websockets` sync client;
- playwright: Playwright for Python launching the same binary (executable_path; no browser is
              downloaded); its `page.evaluate`, and raw Runtime.evaluate through its CDPSession.

For each: the import of the driver's module, the driver's own startup (Playwright's Node process;
the others have none), the browser's launch (spawn until the protocol answers), opening a page
(a new target, navigated to a data: URL, loaded), and the round trip of evaluating `1+1` in the
page (median and p90 of --calls calls after --warmup), and the installed size of the Python
distributions the driver needs. All browsers get the project's flags (browser.BASE_FLAGS), and
each is ended, with its profile folder, before the next starts; the script then checks that no
process it started is left.

A variant whose package is not importable is skipped with the reason, so the project's venv runs
the pipe variant alone. All three need a venv of their own (not the project's):

    python3 -m venv /tmp/drivers-venv && /tmp/drivers-venv/bin/pip install websockets playwright
    PYTHONPATH=/work/main /tmp/drivers-venv/bin/python dev/browser_drivers.py [--json out.json]

Run it a few times on a shared machine: launch and page times move with the load.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import importlib.metadata
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tinygpt_bench (dev/README.md)

_t0 = time.perf_counter()
from tinygpt_bench import browser  # noqa: E402

PIPE_IMPORT_MS = (time.perf_counter() - _t0) * 1e3  # the pipe variant's driver: the project's own module

PAGE = "data:text/html,<!doctype html><title>drivers</title><p>x"
EXPR = "1+1"
WS_PREFIX = f"drivers-ws-{os.getpid()}-"  # the websocket variant's profile folder: marks its processes


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def timed_import(module: str):
    """(module, ms to import it), or (None, why not)."""
    t0 = time.perf_counter()
    try:
        return importlib.import_module(module), ms(t0)
    except ImportError as e:
        return None, f"{module} not importable ({e})"


def round_trips(call, calls: int, warmup: int) -> dict:
    """Median and p90 (ms) of `calls` timed calls of call() after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        times.append(ms(t0))
    return {"eval_med": statistics.median(times), "eval_p90": statistics.quantiles(times, n=10)[8]}


def installed_mb(*dists: str) -> float:
    """The installed size on disk of these distributions (their RECORDs), MB; 0 for none."""
    total = 0
    for name in dists:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in files:
            p = Path(f.locate())
            if p.is_file():
                total += p.stat().st_size
    return total / 1e6


# ---- 1. the pipe: the project's client --------------------------------------------------------
def run_pipe(calls: int, warmup: int) -> dict:
    out = {"import": PIPE_IMPORT_MS, "driver": 0.0, "size_mb": 0.0}  # stdlib only: nothing installed
    c = browser.Chromium(name="drivers-pipe")
    try:
        t0 = time.perf_counter()
        c.start()
        out["launch"] = ms(t0)
        t0 = time.perf_counter()
        c.open(PAGE)
        out["page"] = ms(t0)
        assert c.evaluate(EXPR) == 2
        out.update(round_trips(lambda: c.evaluate(EXPR), calls, warmup))
    finally:
        c.close()
    return out


# ---- 2. the websocket: websockets' sync client -------------------------------------------------
def _die_with_parent():  # pragma: no cover - runs in the child before exec
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class WsBrowser:
    """Chromium with --remote-debugging-port=0 and one websocket connection to it."""

    def __init__(self, ws_client):
        self.client, self.ws, self.session, self.next_id = ws_client, None, None, 0
        self.stack = contextlib.ExitStack()  # the connection, entered as a context (websockets >= 17 wants it)
        self.profile = tempfile.mkdtemp(prefix=WS_PREFIX)
        self.err = tempfile.TemporaryFile()  # a file, not a pipe: nothing has to keep reading it
        argv = [browser.browser_path(), *browser.BASE_FLAGS, "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err,
                                     start_new_session=True, preexec_fn=_die_with_parent)

    def connect(self, timeout: float = 60.0) -> None:
        url = self._ws_url(timeout)
        self.ws = self.stack.enter_context(self.client.connect(url, max_size=None, open_timeout=timeout,
                                                              compression=None))
        self.command("Browser.getVersion")

    def _ws_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.err.seek(0)
            for line in self.err.read().decode(errors="replace").splitlines():
                if line.startswith("DevTools listening on ws://"):
                    return line.split(" on ", 1)[1].strip()
            if self.proc.poll() is not None:
                raise RuntimeError(f"the browser exited with code {self.proc.returncode} before listening")
            time.sleep(0.002)
        raise RuntimeError(f"no 'DevTools listening' line within {timeout:g} s")

    def command(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:  # events in between are dropped
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        target = self.command("Target.createTarget", {"url": "about:blank"})
        self.session = self.command("Target.attachToTarget", {"targetId": target["targetId"],
                                                              "flatten": True})["sessionId"]
        for domain in ("Runtime.enable", "Page.enable"):
            self.command(domain, session=self.session)
        self.command("Page.navigate", {"url": url}, session=self.session)
        while self.evaluate("document.readyState") != "complete":
            time.sleep(0.01)

    def evaluate(self, expression: str):
        r = self.command("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                              "returnByValue": True}, session=self.session)
        return r.get("result", {}).get("value")

    def close(self) -> None:
        try:
            if self.ws is not None:
                self.ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
                self.proc.wait(timeout=5)
        except Exception:
            pass
        finally:
            self.stack.close()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of its group is left
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
            self.err.close()
            shutil.rmtree(self.profile, ignore_errors=True)


def run_websocket(calls: int, warmup: int) -> dict:
    client, took = timed_import("websockets.sync.client")
    if client is None:
        return {"skipped": took}
    out = {"import": took, "driver": 0.0, "size_mb": installed_mb("websockets")}
    t0 = time.perf_counter()
    b = WsBrowser(client)
    try:
        b.connect()
        out["launch"] = ms(t0)
        t0 = time.perf_counter()
        b.open(PAGE)
        out["page"] = ms(t0)
        assert b.evaluate(EXPR) == 2
        out.update(round_trips(lambda: b.evaluate(EXPR), calls, warmup))
    finally:
        b.close()
    return out


# ---- 3. Playwright -------------------------------------------------------------------------------
def playwright_args() -> list[str]:
    """The project's flags less those Playwright sets itself (--headless, --disable-features)."""
    return [f for f in browser.BASE_FLAGS if f != "--headless" and not f.startswith("--disable-features")]


def run_playwright(calls: int, warmup: int) -> dict:
    api, took = timed_import("playwright.sync_api")
    if api is None:
        return {"skipped": took}
    out = {"import": took, "size_mb": installed_mb("playwright", "greenlet", "pyee")}
    t0 = time.perf_counter()
    pw = api.sync_playwright().start()  # the Node driver process
    out["driver"] = ms(t0)
    try:
        t0 = time.perf_counter()
        b = pw.chromium.launch(executable_path=browser.browser_path(), headless=True, args=playwright_args())
        out["launch"] = ms(t0)
        try:
            t0 = time.perf_counter()
            page = b.new_page()
            page.goto(PAGE)
            out["page"] = ms(t0)
            assert page.evaluate(EXPR) == 2
            out.update(round_trips(lambda: page.evaluate(EXPR), calls, warmup))
            cdp = page.context.new_cdp_session(page)
            raw = round_trips(lambda: cdp.send("Runtime.evaluate", {"expression": EXPR, "returnByValue": True,
                                                                    "awaitPromise": True}), calls, warmup)
            out["cdp_med"], out["cdp_p90"] = raw["eval_med"], raw["eval_p90"]
        finally:
            b.close()
    finally:
        pw.stop()
    return out


# ---- the check and the table ------------------------------------------------------------------------
def leftovers() -> list[str]:
    """Processes still alive that this run started: descendants of this process, and any
    process whose command line names this run's profile folders."""
    marks = (WS_PREFIX, f"{browser.PROFILE_PREFIX}{os.getpid()}-")
    parent, found = {}, []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if state != "Z":
            parent[int(d)] = (int(ppid), cmd)
    for pid, (_, cmd) in parent.items():
        p, hops = pid, 0
        while p in parent and p != os.getpid() and hops < 64:
            p, hops = parent[p][0], hops + 1
        if pid != os.getpid() and (p == os.getpid() or any(m in cmd for m in marks)):
            found.append(f"{pid} {cmd[:120]}")
    return found


VARIANTS = {"pipe": run_pipe, "websocket": run_websocket, "playwright": run_playwright}
COLUMNS = (("import", "import ms"), ("driver", "driver ms"), ("launch", "launch ms"), ("page", "page ms"),
           ("eval_med", "eval med"), ("eval_p90", "eval p90"), ("size_mb", "size MB"))


def table(results: dict) -> str:
    head = f"{'variant':<12}" + "".join(f"{title:>11}" for _, title in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"{name:<12} skipped: {r['skipped']}")
            continue
        lines.append(f"{name:<12}" + "".join(f"{r[k]:>11.{3 if k.startswith('eval') else 1}f}" for k, _ in COLUMNS))
        if "cdp_med" in r:
            lines.append(f"{'  +cdp':<12}" + " " * 44 + f"{r['cdp_med']:>11.3f}{r['cdp_p90']:>11.3f}"
                         + "   (Runtime.evaluate via CDPSession)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ",".join(VARIANTS))
    ap.add_argument("--calls", type=int, default=200, help="timed evaluations per variant")
    ap.add_argument("--warmup", type=int, default=10, help="untimed evaluations before them")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    print(f"{browser.browser_version(browser.browser_path())['browser']}; python {sys.version.split()[0]}; "
          f"load {os.getloadavg()[0]:.2f}; {args.calls} calls after {args.warmup} warm-ups")
    results = {}
    for name in args.variants.split(","):
        results[name] = VARIANTS[name](args.calls, args.warmup)
    print(table(results))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    left = leftovers()
    print("leftover processes: " + ("; ".join(left) if left else "none"))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "leftovers": left}, indent=1))
    if left:
        sys.exit(1)


if __name__ == "__main__":
    main()
