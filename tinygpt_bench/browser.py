"""Chromium as a host of the engines' browser backends (wasm-chrome; webgpu-chrome next): the
system's browser, launched headless for one measurement, driven over the DevTools protocol, and
a local server that gives its page what a web page gets from its origin.

- The browser is the system's: Debian's `chromium` (installed by ./setup.sh), or the one named
  by --browser PATH or $TINYGPT_BENCH_BROWSER. Nothing is downloaded at run time.
- The driver is the DevTools protocol over a pipe (`--remote-debugging-pipe`: file descriptors
  3 and 4 of the browser, one JSON message each, ended by a NUL byte): no port to listen on,
  no client library, and the browser ends when the pipe closes. docs/wasm-engine.md gives the
  measurements that chose it over a websocket client and over Playwright.
- The server (`Server`) listens on 127.0.0.1 on an ephemeral port, under a random path prefix,
  and serves only what it was given: the page's files (with the headers that make the page
  cross-origin isolated, so that it has SharedArrayBuffer and shared WebAssembly memories),
  and bulk data in both directions (initial weights down, parameters and gradients up) as
  blobs, so that megabytes never travel through the protocol.
- Everything ends with the measurement: the browser is started in its own process group and
  with PR_SET_PDEATHSIG (it dies with the process that started it, even one killed with
  SIGKILL), close() ends the group, the server's thread and the browser's profile folder.
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import http.server
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tinygpt_bench import scratch
from tinygpt_bench.sigmask import sigint_blocked
from tinygpt_bench.errors import UserError

BROWSER_ENV = "TINYGPT_BENCH_BROWSER"
# Debian's package installs the binary itself there; /usr/bin/chromium is a wrapper script that
# adds flags of its own, so the binary is preferred
CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
MIN_MAJOR = 133  # WebAssembly Memory64 on by default (Chrome 133); threads, SIMD and relaxed SIMD before it
INSTALL_FIX = ("install the system's Chromium (Debian/Ubuntu: sudo apt-get install chromium; ./setup.sh does it) "
               f"or name one with --browser PATH or {BROWSER_ENV}")
PROFILE_PREFIX = "tinygpt-chrome-"  # the browser's profile folder: tinygpt-chrome-<pid>-<random>
SHORT_TMP = "/tmp" if os.path.isdir("/tmp") else None  # its TMPDIR: Unix socket paths must stay short
# Flags for a quiet, measurable browser: no first-run UI, no background network or component
# updates, no throttling of a page that is not visible (headless pages never are). No sandbox:
# the page is this package's own, served from 127.0.0.1, and the renderer sandbox needs user
# namespaces or a setuid helper that containers and root often lack.
BASE_FLAGS = ("--headless", "--no-sandbox", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--disable-breakpad", "--disable-crash-reporter", "--mute-audio",
              "--password-store=basic", "--use-mock-keychain", "--disable-background-timer-throttling",
              "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
              "--disable-features=Translate,MediaRouter,OptimizationHints")


class BrowserError(RuntimeError):
    """The browser failed: it could not start, its page crashed, a command failed or timed out."""

    def __init__(self, message: str, stage: str = "browser"):
        super().__init__(message)
        self.stage = stage


def browser_path(path: str | None = None) -> str:
    """The browser to run: `path`, else $TINYGPT_BENCH_BROWSER, else the system's Chromium."""
    given = path or os.environ.get(BROWSER_ENV)
    if given:
        found = shutil.which(given) if os.sep not in given else given
        if not found or not (os.path.isfile(found) and os.access(found, os.X_OK)):
            src = "--browser" if path else BROWSER_ENV
            raise UserError(f"browser: {src} {given} is not an executable browser; name Chromium or Chrome "
                            f"{MIN_MAJOR} or newer, or {INSTALL_FIX}")
        return found
    for c in CANDIDATES:
        found = shutil.which(c) if os.sep not in c else (c if os.access(c, os.X_OK) else None)
        if found:
            return found
    raise UserError(f"browser: no Chromium found ({', '.join(CANDIDATES)}); {INSTALL_FIX}")


@lru_cache(maxsize=8)
def browser_version(path: str) -> dict:
    """{'browser': 'Chromium 156.0.8078.129', 'major': 156} of that binary; a UserError if it does
    not run or is older than MIN_MAJOR."""
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        line = r.stdout.strip().splitlines()[-1].strip()  # "Chromium 156.0.8078.129 built on Debian ..."
        m = re.search(r"^(.*?)\s*((\d+)\.\d+\.\d+\.\d+)", line)
        text, major = f"{m.group(1) or 'Chromium'} {m.group(2)}", int(m.group(3))
    except (OSError, subprocess.SubprocessError, IndexError, AttributeError, ValueError) as e:
        raise UserError(f"browser: {path} --version did not name a Chromium version ({type(e).__name__}); "
                        f"{INSTALL_FIX}") from None
    if major < MIN_MAJOR:
        raise UserError(f"browser: {path} is {text}; WebAssembly Memory64 needs Chromium {MIN_MAJOR} or newer: "
                        f"{INSTALL_FIX}")
    return {"browser": text, "major": major}


@lru_cache(maxsize=8)
def v8_version(path: str) -> str:
    """The version of V8 in that browser, from a short launch (the binary's --version names the
    browser's only)."""
    with Chromium(path, ("--disable-gpu",), name="browser") as c:
        c.start()
        return c.js_version


def _child_setup(read_fd: int, write_fd: int):  # pragma: no cover - runs in the child before exec
    parent = os.getpid()

    def setup():
        # the protocol's pipe on fds 3 (commands in) and 4 (replies out); via free fds above 4
        # first (F_DUPFD: the lowest free one), so that neither dup2 closes the other's source
        high_r, high_w = fcntl.fcntl(read_fd, fcntl.F_DUPFD, 5), fcntl.fcntl(write_fd, fcntl.F_DUPFD, 5)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:
            pass
        if os.getppid() != parent:  # the parent died before prctl: no signal would come
            os._exit(1)
    return setup


def remove_orphan_profiles(where: str | None = None) -> list[str]:
    """Remove the profile (and browser temporary) folders left by processes no longer alive
    (killed mid-measurement), in `where` (default: the temporary folder and /tmp)."""
    import glob

    removed = []
    folders = [where] if where else sorted({tempfile.gettempdir(), SHORT_TMP or tempfile.gettempdir()})
    for path in (p for f in folders for p in glob.glob(os.path.join(f, f"{PROFILE_PREFIX}*-*"))):
        pid = os.path.basename(path)[len(PROFILE_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


class Chromium:
    """One headless browser and one page in it, driven over the DevTools protocol on a pipe.

    start() launches it (its own process group, dying with this process); open(url) opens the
    page and waits for it to load; evaluate(expression) runs an expression in the page (awaiting
    a promise) and returns its value; close() ends every process of the browser."""

    def __init__(self, path: str | None = None, flags: tuple[str, ...] = (), name: str = "browser"):
        self.path = browser_path(path)
        self.version = browser_version(self.path)
        self.flags, self.name = tuple(flags), name
        self.proc: subprocess.Popen | None = None
        self.product: str | None = None  # 'Chrome/156.0.8078.129', from the protocol
        self.js_version: str | None = None  # V8's version
        self.console: list[str] = []  # the page's last console lines and exceptions
        self.crashed: str | None = None  # why the page is gone (its renderer crashed)
        self._session: str | None = None
        self._buf = b""
        self._id = 0
        self._wfd = self._rfd = None
        self._profile: str | None = None
        self._tmp: str | None = None
        self._stderr = None

    # ---- the process ------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        remove_orphan_profiles()
        self._profile = tempfile.mkdtemp(prefix=f"{PROFILE_PREFIX}{os.getpid()}-")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._stderr = tempfile.TemporaryFile()
        argv = [self.path, *BASE_FLAGS, *self.flags, "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                "--no-startup-window"]  # open() makes the one page; a first empty tab cost ~170 ms here
        self._wfd, self._rfd = to_child_w, from_child_r
        try:  # fds 3 and 4 are made in the child (_child_setup); every other fd is closed there
            # its temporary files (org.chromium.*, a socket among them: a short path) in a folder
            # of the same name scheme, so that a browser killed with its measurement leaves
            # folders that the next start removes (remove_orphan_profiles)
            self._tmp = tempfile.mkdtemp(prefix=f"{PROFILE_PREFIX}{os.getpid()}-", dir=SHORT_TMP)
            tmp = self._tmp
            with sigint_blocked():
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=self._stderr, env={**os.environ, "TMPDIR": tmp}, close_fds=True,
                                             pass_fds=(3, 4), preexec_fn=_child_setup(to_child_r, from_child_w),
                                             start_new_session=True)
        except OSError as e:
            self.close()
            raise UserError(f"{self.name}: cannot start {self.path} ({e}); {INSTALL_FIX}") from None
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        try:
            v = self.command("Browser.getVersion", timeout=timeout, stage="launch")
        except BrowserError:
            self.close()
            raise
        self.product, self.js_version = v.get("product"), v.get("jsVersion")

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace")
        except (OSError, ValueError, AttributeError):
            return ""
        kept = [ln.strip() for ln in text.splitlines() if ln.strip() and "dbus" not in ln.lower()]
        return "; ".join(kept[-lines:])[:400]

    def pids(self) -> list[int]:
        """The running processes of the browser (its process group), zombies left out."""
        return group_pids(self.proc.pid) if self.proc is not None else []

    def peak_rss(self) -> int | None:
        """The largest peak resident size among the browser's processes (the renderer that runs
        the page, for a page that computes), bytes."""
        peaks = [peak_rss_of(p) for p in self.pids()]
        peaks = [p for p in peaks if p]
        return max(peaks) if peaks else None

    def close(self) -> None:
        """End the browser and everything it started; safe to call twice."""
        p, self.proc = self.proc, None
        for fd in (self._wfd, self._rfd):
            if fd is not None:
                try:
                    os.close(fd)  # the browser ends when its pipe closes
                except OSError:
                    pass
        self._wfd = self._rfd = None
        if p is not None:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # whatever of its group is left
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        for folder in (self._profile, self._tmp):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        self._profile = self._tmp = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- the protocol -------------------------------------------------------------------
    def command(self, method: str, params: dict | None = None, session: str | None = None,
                timeout: float | None = 60.0, stage: str = "browser") -> dict:
        """One protocol command; its result, or a BrowserError naming the stage."""
        if self._wfd is None:
            raise BrowserError(f"{self.name}: the browser is not running", stage)
        if self.crashed and session is not None:
            raise BrowserError(self.crashed, stage)
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._wfd, data):]
        except OSError as e:
            raise BrowserError(self._died(f"while sending {method} ({e})"), stage) from None
        reply = self._wait(self._id, timeout, method, stage)
        if "error" in reply:
            raise BrowserError(f"{self.name}: {method}: {reply['error'].get('message')}", stage)
        return reply.get("result", {})

    def _died(self, when: str) -> str:
        code = self.proc.poll() if self.proc is not None else None
        err = self.stderr_tail()
        return (f"{self.name}: the browser exited{f' with code {code}' if code is not None else ''} {when}"
                + (f": {err}" if err else ""))

    def _wait(self, want: int, timeout: float | None, method: str, stage: str) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if msg.get("id") == want:
                    return msg
                self._event(msg, stage)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise BrowserError(f"{self.name}: {method} got no answer within {timeout:g} s", stage)
            ready, _, _ = select.select([self._rfd], [], [], 1.0 if left is None else min(left, 1.0))
            if not ready:
                if self.proc is not None and self.proc.poll() is not None:
                    raise BrowserError(self._died(f"during {method}"), stage)
                continue
            chunk = os.read(self._rfd, 1 << 20)
            if not chunk:
                raise BrowserError(self._died(f"during {method}"), stage)
            self._buf += chunk

    def _event(self, msg: dict, stage: str) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method in ("Inspector.targetCrashed", "Target.targetCrashed") and (
                msg.get("sessionId") in (None, self._session)):
            self.crashed = (f"{self.name}: the page's renderer crashed"
                            + (f"; last console lines: {' | '.join(self.console[-3:])}" if self.console else ""))
            raise BrowserError(self.crashed, stage)
        if method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self._keep(f"console.{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self._keep(f"exception: {(d.get('exception') or {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded":  # the browser's own: a resource that failed to load, a policy
            e = params.get("entry", {})
            self._keep(f"log.{e.get('level')}: {e.get('source')}: {e.get('text')}")

    def _keep(self, line: str) -> None:
        self.console.append(line[:500])
        del self.console[:-50]

    def open(self, url: str, timeout: float = 60.0) -> None:
        """Open a page at `url` and wait until it has loaded."""
        target = self.command("Target.createTarget", {"url": "about:blank"}, timeout=timeout, stage="page")
        self._session = self.command("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                     timeout=timeout, stage="page")["sessionId"]
        for domain in ("Runtime.enable", "Page.enable", "Inspector.enable", "Log.enable"):
            self.command(domain, session=self._session, timeout=timeout, stage="page")
        nav = self.command("Page.navigate", {"url": url}, session=self._session, timeout=timeout, stage="page")
        if nav.get("errorText"):
            raise BrowserError(f"{self.name}: the page {url} did not load: {nav['errorText']}", "page")
        deadline = time.monotonic() + timeout
        while self.evaluate("document.readyState", timeout=timeout, stage="page") != "complete":
            if time.monotonic() > deadline:
                raise BrowserError(f"{self.name}: the page {url} did not finish loading within {timeout:g} s", "page")
            time.sleep(0.01)

    def crash_page(self) -> None:
        """Crash the page's renderer (Page.crash): fault injection, to test that a crash is a failed
        measurement naming its stage. The next command on the page raises."""
        try:
            self.command("Page.crash", session=self._session, timeout=10, stage="crash")
        except BrowserError:
            pass
        self.crashed = self.crashed or f"{self.name}: the page's renderer crashed (injected: Page.crash)"

    def evaluate(self, expression: str, timeout: float | None = 60.0, stage: str = "page"):
        """The value of `expression` in the page (a promise is awaited); a thrown error is a
        BrowserError with the page's text."""
        r = self.command("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                         session=self._session, timeout=timeout, stage=stage)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            text = (d.get("exception") or {}).get("description") or d.get("text")
            raise BrowserError(f"{self.name}: {text}", stage)
        return r.get("result", {}).get("value")


def group_pids(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            out.append(int(d))
    return out


def peak_rss_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---- the local server -----------------------------------------------------------------------
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cross-Origin-Resource-Policy": "same-origin", "Cache-Control": "no-store"}
TYPES = {".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".js": "text/javascript",
         ".wasm": "application/wasm", ".wgsl": "text/plain; charset=utf-8", ".json": "application/json"}
CHUNK = 8 << 20


class Server:
    """An HTTP server on 127.0.0.1 (an ephemeral port) for one page: files by name, blobs down
    (bytes the page fetches) and blobs up (bytes the page sends, written into an array here).
    Every path starts with a random prefix, so nothing else on the machine can guess one; every
    response carries the cross-origin isolation headers. Its thread ends with close()."""

    def __init__(self):
        self.prefix = secrets.token_hex(12)
        self._files: dict[str, Path] = {}
        self._down: dict[str, memoryview] = {}
        self._up: dict[str, memoryview] = {}
        self.errors: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _route(self):
                parts = urlsplit(self.path)
                head, _, rest = parts.path.lstrip("/").partition("/")
                return (rest if head == server.prefix else None), parse_qs(parts.query)

            def _send(self, code: int, body: bytes = b"", ctype: str = "text/plain; charset=utf-8"):
                self.send_response(code)
                for k, v in ISOLATION.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self):
                name, _ = self._route()
                view = server._down.get(name[5:]) if name is not None and name.startswith("blob/") else None
                if name in server._files:
                    path = server._files[name]
                    self._send(200, path.read_bytes(), TYPES.get(path.suffix, "application/octet-stream"))
                elif view is not None:
                    self.send_response(200)
                    for k, v in ISOLATION.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(view)))
                    self.end_headers()
                    for off in range(0, len(view), CHUNK):
                        self.wfile.write(view[off:off + CHUNK])
                else:
                    self._send(404, b"not found")

            def do_PUT(self):
                name, query = self._route()
                dst = server._up.get(name[5:]) if name is not None and name.startswith("blob/") else None
                if dst is None:
                    return self._send(404, b"not found")
                try:
                    off, n = int(query["offset"][0]), int(self.headers["Content-Length"])
                except (KeyError, ValueError, IndexError, TypeError):
                    return self._send(400, b"offset and Content-Length needed")
                if off < 0 or off + n > len(dst):
                    server.errors.append(f"upload {name}: {off}+{n} past its {len(dst)} bytes")
                    return self._send(400, b"past the end")
                got = 0
                while got < n:
                    k = self.rfile.readinto(dst[off + got:off + n])
                    if not k:
                        break
                    got += k
                self._send(200 if got == n else 400, b"ok" if got == n else b"short body")

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a peer gone mid-transfer: noted, not printed
                import sys

                server.errors.append(f"{type(sys.exc_info()[1]).__name__}: {sys.exc_info()[1]}")

        self._httpd = Quiet(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tinygpt-browser-server", daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.origin}/{self.prefix}/{name}"

    def add_file(self, name: str, path: str | Path) -> str:
        """Serve a file under `name`; its URL."""
        self._files[name] = Path(path)
        return self.url(name)

    def offer(self, data) -> tuple[str, str]:
        """Bytes the page may fetch once: (key, URL). `data`: anything with the buffer protocol
        (a numpy array is served in place, not copied)."""
        key = secrets.token_hex(8)
        self._down[key] = memoryview(data).cast("B")
        return key, self.url(f"blob/{key}")

    def expect(self, nbytes: int) -> tuple[str, str, bytearray]:
        """A place for `nbytes` the page will send (PUT ...?offset=N, in any number of parts):
        (key, URL, the buffer that receives them)."""
        key, buf = secrets.token_hex(8), bytearray(nbytes)
        self._up[key] = memoryview(buf)
        return key, self.url(f"blob/{key}"), buf

    def forget(self, key: str) -> None:
        self._down.pop(key, None)
        view = self._up.pop(key, None)
        if view is not None:
            view.release()

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self._down.clear()
        self._up.clear()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
