import os

# numpy's bundled OpenBLAS spins its threads; on a 2-core machine shared with lavapipe and
# wasm workers that made reference steps 40x slower. One BLAS thread keeps tests steady.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

from tinygpt_bench import cli  # noqa: E402


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def _run(*argv: str):
        code = 0
        try:
            cli.main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


TERMINAL_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); os.execv(sys.argv[1], sys.argv[1:])")


def as_a_terminal_starts(cmd: list[str]) -> list[str]:
    """`cmd` started with SIGINT as a terminal's foreground job has it (default, not blocked),
    through a small Python that sets it and execs `cmd` (same pid; no preexec_fn, which is unsafe
    in a process with threads). A test run started in the background (CI's job, `pytest &` in a
    shell without job control) has SIGINT ignored; a child inherits that through exec, Python
    then installs no KeyboardInterrupt handler, and the run rightly ignores Ctrl-C: a Ctrl-C test
    would see a run go on (CI saw one go on a minute after it, and one end with 0)."""
    import sys

    return [sys.executable, "-c", TERMINAL_SIGINT, *cmd]


def _sigint_state():
    import signal
    import threading

    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return signal.getsignal(signal.SIGINT), blocked, threading.current_thread() is threading.main_thread()


@pytest.fixture(autouse=True)
def _sigint_left_as_it_was():
    """No test leaves this process's SIGINT blocked or its handler changed (the harness blocks it
    around starting children, sigmask.py; the fork server ignores it, worker_signals.py): a
    process started afterwards would inherit it. The test that changed it fails, naming it."""
    import signal

    before = _sigint_state()
    yield
    after = _sigint_state()
    if after != before:
        signal.signal(signal.SIGINT, before[0])
        signal.pthread_sigmask(signal.SIG_UNBLOCK if not before[1] else signal.SIG_BLOCK, [signal.SIGINT])
        pytest.fail(f"this test left SIGINT changed: handler {before[0]!r} -> {after[0]!r}, "
                    f"blocked {before[1]} -> {after[1]}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test touches the user's cache or the network."""
    monkeypatch.setenv("TINYGPT_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("TINYGPT_BENCH_SHAKESPEARE_URL", "file:///nonexistent/tinyshakespeare.txt")


# WebGPU implementations the engine's tests run on: wgpu-native (`webgpu`) and Dawn, Chrome's
# implementation (`webgpu-dawn`). Where an implementation finds no adapter its tests skip, with
# the fix; TINYGPT_BENCH_REQUIRE_WEBGPU=wgpu-native,dawn (set by .ci/run) makes that a failure,
# so CI cannot pass with the conformance tests skipped.
WEBGPU_IMPLEMENTATIONS = ("wgpu-native", "dawn")
WEBGPU_BACKENDS = {"wgpu-native": "webgpu", "dawn": "webgpu-dawn"}


def no_webgpu_here(implementation: str, msg: str):
    """Skip where `implementation` has no adapter here, naming why; a failure where
    TINYGPT_BENCH_REQUIRE_WEBGPU (set by .ci/run) requires it."""
    if implementation in os.environ.get("TINYGPT_BENCH_REQUIRE_WEBGPU", "").split(","):
        pytest.fail(msg + "; TINYGPT_BENCH_REQUIRE_WEBGPU requires it")
    pytest.skip(msg)


def open_gpu(implementation: str, **kw):
    """A wgpu_runtime.Gpu on `implementation`, or a skip (a failure where it is required)."""
    from tinygpt_bench.engines.webgpu import runtime as wgpu_runtime

    try:
        return wgpu_runtime.Gpu(implementation=implementation, **kw)
    except Exception as e:  # UserError (none found, not installed), or a driver failing to start
        no_webgpu_here(implementation, f"no usable WebGPU adapter on {implementation} ({type(e).__name__}: {e})")


@pytest.fixture(scope="module", params=WEBGPU_IMPLEMENTATIONS)
def gpu(request):
    """The module's device, once per WebGPU implementation."""
    return open_gpu(request.param)


# ---- processes a test leaves (the browser backends: tests/test_wasm_chrome.py, test_webgpu_chrome.py)
def ours(marker: str) -> list[str]:
    """Live processes whose command line names `marker` (a test's own temporary folder)."""
    from pathlib import Path

    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z" and marker in cmd:
            found.append(f"{d}: {cmd[:160]}")
    return found


def run_watching_the_browser(cmd: list[str], marker: str, env: dict, timeout: float = 300):
    """Run `cmd` to its end, looking every 0.1 s for a browser process of its own (a Chromium
    whose command line names `marker`, the test's TMPDIR): (CompletedProcess, seen). A test that
    then finds no browser left asserts `seen` too, or it would pass where none ever started."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    seen, deadline = False, time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            seen = seen or any("--user-data-dir" in x or "--type=" in x for x in ours(marker))
            time.sleep(0.1)
        out, err = proc.communicate(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:  # past the deadline: the run and all it started go
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), seen


def wait_none(marker: str, seconds: float = 15.0) -> list[str]:
    """ours(marker) once it is empty, or what is still there after `seconds`."""
    import time

    deadline = time.time() + seconds
    while (left := ours(marker)) and time.time() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture(scope="module")
def chromium_required():
    """Skip a module's tests naming the fix where no usable browser is installed; with
    TINYGPT_BENCH_REQUIRE_BROWSER=1 (set by .ci/run) that is a failure instead."""
    from tinygpt_bench import browser
    from tinygpt_bench.errors import UserError

    try:
        browser.browser_version(browser.browser_path())
    except UserError as e:
        if os.environ.get("TINYGPT_BENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TINYGPT_BENCH_REQUIRE_BROWSER=1 but no usable browser: {e}")
        pytest.skip(str(e))
