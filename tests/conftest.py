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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test touches the user's cache or the network."""
    monkeypatch.setenv("TINYGPT_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("TINYGPT_BENCH_SHAKESPEARE_URL", "file:///nonexistent/tinyshakespeare.txt")
