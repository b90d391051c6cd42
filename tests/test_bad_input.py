"""Bad input and faults, table-driven: every case ends with its exit code, exactly one line on
stderr, no traceback anywhere, and every file already in the test's folder byte for byte as it
was (a refused command damages nothing). In-process CLI calls, cheap backends, tiny preset."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tinygpt_bench import cli, compare, results, stats

CHEAP = ["--backends", "reference,reference-fp32", "--steps", "2", "--repeats", "1", "--plain"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One small complete run (with its chart), made once; cases work on copies of it."""
    out = tmp_path_factory.mktemp("good") / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(["curve", "--presets", "tiny", *CHEAP, "--out", str(out)])
    assert e.value.code in (0, None)
    return out


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- the cases: (id, setup(ws, run) -> argv, exit code, text the line must hold) --------------
# ws: the test's folder; run: a copy of the good run in ws/run (free to corrupt)

def _edit(path: Path, fn) -> None:
    path.write_bytes(fn(path.read_bytes()))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


V = str(results.FORMAT_VERSION).encode()
NEXT = str(results.FORMAT_VERSION + 1)


def future_version(run):
    _edit(run / "measurements.csv", lambda b: b.replace(b"\n" + V + b",", b"\n" + NEXT.encode() + b",", 1))


def old_version(run):
    _edit(run / "measurements.csv", lambda b: b.replace(b"\n" + V + b",", b"\n1,", 1))


def garbage_version(run):
    _edit(run / "measurements.csv", lambda b: b.replace(b"\n" + V + b",", b"\nx,", 1))


def truncated_row(run):
    lines = _lines(run / "measurements.csv")
    (run / "measurements.csv").write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])


def not_a_number(run):
    m = pd.read_csv(run / "measurements.csv", dtype=str, keep_default_na=False)
    m.loc[0, "median_ms"] = "fast"
    m.to_csv(run / "measurements.csv", index=False)


def bad_status(run):
    m = pd.read_csv(run / "measurements.csv", dtype=str, keep_default_na=False)
    m.loc[1, "status"] = "great"
    m.to_csv(run / "measurements.csv", index=False)


def header_only(run):
    (run / "measurements.csv").write_bytes(_lines(run / "measurements.csv")[0])


def empty_measurements(run):
    (run / "measurements.csv").write_bytes(b"")


def binary_measurements(run):
    (run / "measurements.csv").write_bytes(b"\xff\xfe\x00garbage\x80\x81\n")


def no_environment(run):
    (run / "environment.json").unlink()


def empty_environment(run):
    (run / "environment.json").write_bytes(b"")


def future_environment(run):
    env = json.loads((run / "environment.json").read_text())
    env["format_version"] = 99
    (run / "environment.json").write_text(json.dumps(env))


def truncated_steps(run):
    lines = _lines(run / "steps.csv")
    (run / "steps.csv").write_bytes(b"".join(lines[:-1]) + lines[-1][:10])


def future_steps(run):
    _edit(run / "steps.csv", lambda b: b.replace(b"\n" + V + b",", b"\n" + NEXT.encode() + b",", 1))


def no_folder(run):
    shutil.rmtree(run)


CORRUPTIONS = {
    "future-format-version": (future_version, f"format version '{NEXT}', this tinygpt-bench reads "
                                              f"{results.FORMAT_VERSION}; upgrade tinygpt-bench to read it"),
    "old-format-version": (old_version, "format version '1', this tinygpt-bench reads "
                                        f"{results.FORMAT_VERSION}; upgrade the folder to format "
                                        f"{results.FORMAT_VERSION} with `python dev/migrate_results.py FOLDER`"),
    "garbage-format-version": (garbage_version, "format version 'x'"),
    "truncated-row": (truncated_row, "measurements.csv, line 3"),
    "not-a-number": (not_a_number, "measurements.csv, line 2: median_ms"),
    "bad-status": (bad_status, "measurements.csv, line 3: status"),
    "header-only": (header_only, "holds no measurements"),
    "empty-measurements": (empty_measurements, "is empty"),
    "binary-measurements": (binary_measurements, "not UTF-8"),
    "no-environment": (no_environment, "environment.json is missing"),
    "empty-environment": (empty_environment, "environment.json: not valid JSON"),
    "future-environment": (future_environment, "environment.json: format version 99"),
    "truncated-steps": (truncated_steps, "steps.csv, line"),
    "future-steps": (future_steps, f"steps.csv, line 2: format version '{NEXT}'"),
    "no-folder": (no_folder, "does not exist|holds no measurements.csv"),
}
READERS = {
    "summary": lambda ws, run: ["summary", str(run)],
    "summary-md": lambda ws, run: ["summary", str(run), "--markdown"],
    "chart": lambda ws, run: ["chart", str(run)],
    "compare-new": lambda ws, run: ["compare", str(ws / "ref"), str(run)],
    "compare-old": lambda ws, run: ["compare", str(run), str(ws / "ref")],
    "report": lambda ws, run: ["report", str(run)],
}
# steps.csv is read only where step times are used: summary, chart, compare, report all use them
CASES = [(f"{reader}/{name}", corrupt, argv, 2, needle)
         for name, (corrupt, needle) in CORRUPTIONS.items() for reader, argv in READERS.items()]


def _argv(*a):
    return lambda ws, run: [x.format(ws=ws, run=run) for x in a]


def _toml(ws, name, text):
    (ws / name).write_text(text)
    return str(ws / name)


MINE = 'name = "mine"\n'
SHAPE = "layers = 1\nd_model = 16\nheads = 2\nctx = 8\nbatch = 2\n"
INPUT_CASES = [
    ("run/unknown-preset", None, _argv("run", "gigantic"), 2, "unknown preset 'gigantic'"),
    ("run/unknown-backend", None, _argv("run", "tiny", "--backend", "cuda9"), 2, "unknown backend 'cuda9'"),
    ("run/backend-other-case", None, _argv("run", "tiny", "--backend", "WASM"), 2,
     "unknown backend 'WASM'; did you mean 'wasm'?"),
    ("run/preset-typo", None, _argv("run", "smal"), 2, "unknown preset 'smal'; did you mean 'small'?"),
    ("curve/backend-typo", None, _argv("curve", "--presets", "tiny", "--backends", "reference,wasm8",
                                       "--out", "{ws}/new"), 2, "unknown backend 'wasm8'; did you mean 'wasm'?"),
    ("curve/preset-other-case", None, _argv("curve", "--presets", "TINY", *CHEAP, "--out", "{ws}/new"), 2,
     "unknown preset 'TINY'; did you mean 'tiny'?"),
    ("diagnose/backend-typo", None, _argv("diagnose", "tiny", "-b", "webgpu_dawn", "--out", "{ws}/d"), 2,
     "unknown backend 'webgpu_dawn'; did you mean 'webgpu-dawn'?"),
    ("run/steps-0", None, _argv("run", "tiny", "--steps", "0"), 2, "--steps 0"),
    ("run/seed-negative", None, _argv("run", "tiny", "--seed", "-1"), 2, "--seed -1"),
    ("run/seed-not-a-number", None, _argv("run", "tiny", "--seed", "abc"), 2, "--seed"),
    ("run/unknown-option", None, _argv("run", "tiny", "--fast"), 2, "--fast"),
    ("run/missing-corpus", None, _argv("run", "tiny", "--corpus", "{ws}/none.txt"), 2, "does not exist"),
    ("run/malformed-toml", None, lambda ws, run: ["run", _toml(ws, "bad.toml", "layers = [")], 2, "malformed TOML"),
    ("run/heads-not-dividing", None,
     lambda ws, run: ["run", _toml(ws, "odd.toml", SHAPE.replace("heads = 2", "heads = 3"))], 2, "not divisible"),
    ("run/toml-named-like-builtin", None,
     lambda ws, run: ["run", _toml(ws, "mine.toml", 'name = "tiny"\n' + SHAPE)], 2, "built-in preset"),
    ("run/toml-file-stem-builtin", None,
     lambda ws, run: ["run", _toml(ws, "small.toml", SHAPE)], 2, "name 'small' is a built-in"),
    ("curve/two-presets-one-name", None,
     lambda ws, run: ["curve", "--presets", _toml(ws, "a.toml", MINE + SHAPE) + ","
                      + _toml(ws, "b.toml", MINE + SHAPE.replace("ctx = 8", "ctx = 16")),
                      *CHEAP, "--out", str(ws / "new")], 2, "two presets named 'mine'"),
    ("curve/seed-negative", None, _argv("curve", "--presets", "tiny", *CHEAP, "--seed", "-1", "--out", "{ws}/new"),
     2, "--seed -1"),
    ("curve/backends-empty", None,
     _argv("curve", "--presets", "tiny", "--backends", "", "--out", "{ws}/new"), 2, "names no backend"),
    ("curve/backends-commas", None,
     _argv("curve", "--presets", "tiny", "--backends", ",,", "--out", "{ws}/new"), 2, "names no backend"),
    ("curve/backend-unknown", None,
     _argv("curve", "--presets", "tiny", "--backends", "wasm,nope", "--out", "{ws}/new"), 2, "unknown backend 'nope'"),
    ("curve/presets-empty", None, _argv("curve", "--presets", "", *CHEAP, "--out", "{ws}/new"), 2, "empty preset list"),
    ("curve/repeats-0", None,
     _argv("curve", "--presets", "tiny", "--backends", "reference", "--repeats", "0", "--out", "{ws}/new"), 2,
     "--repeats 0"),
    ("curve/steps-not-a-number", None, _argv("curve", "--steps", "many"), 2, "--steps"),
    ("curve/out-is-a-file", None, _argv("curve", "--presets", "tiny", *CHEAP, "--out", "{run}/measurements.csv"), 2,
     "is a file, not a folder"),
    ("curve/out-under-a-file", None,
     _argv("curve", "--presets", "tiny", *CHEAP, "--out", "{run}/measurements.csv/sub"), 2, "cannot write into"),
    ("curve/out-holds-results", None, _argv("curve", "--presets", "tiny", *CHEAP, "--out", "{run}"), 2,
     "pass --resume"),
    ("curve/resume-other-settings", None,
     _argv("curve", "--presets", "tiny", *CHEAP, "--steps", "3", "--out", "{run}", "--resume"), 2,
     "--resume refused"),
    ("curve/resume-without-environment", lambda run: (run / "environment.json").unlink(),
     _argv("curve", "--presets", "tiny", *CHEAP, "--out", "{run}", "--resume"), 2, "but no environment.json"),
    ("curve/resume-truncated-row", truncated_row,
     _argv("curve", "--presets", "tiny", *CHEAP, "--out", "{run}", "--resume"), 2, "measurements.csv, line 3"),
    ("diagnose/max-memory-inf", None, _argv("diagnose", "tiny", "-b", "wasm", "--max-memory", "1e999",
                                            "--out", "{ws}/d"), 2, "not a usable size"),
    ("diagnose/max-memory-0", None, _argv("diagnose", "tiny", "-b", "wasm", "--max-memory", "0",
                                          "--out", "{ws}/d"), 2, "not a usable size"),
    ("diagnose/initial-memory-word", None, _argv("diagnose", "tiny", "-b", "wasm", "--initial-memory", "lots",
                                                 "--out", "{ws}/d"), 2, "not a size"),
    ("compare/threshold-nan", None, _argv("compare", "{ws}/ref", "{run}", "--threshold", "nan"), 2, "--threshold nan"),
    ("compare/threshold-inf", None, _argv("compare", "{ws}/ref", "{run}", "--threshold", "inf"), 2, "--threshold inf"),
    ("compare/threshold-negative", None, _argv("compare", "{ws}/ref", "{run}", "--threshold", "-1"), 2,
     "--threshold -1"),
    ("compare/nothing-in-common", lambda run: [_edit(run / f, lambda b: b.replace(b",tiny,", b",small,"))
                                               for f in ("measurements.csv", "steps.csv")],
     _argv("compare", "{ws}/ref", "{run}"), 2, "nothing to compare"),
    ("chart-check/missing-png", lambda run: (run / "speedup.png").unlink(), _argv("chart", "{run}", "--check"), 1,
     "speedup.png is missing"),
    ("chart-check/missing-svg", lambda run: (run / "speedup.svg").unlink(), _argv("chart", "{run}", "--check"), 1,
     "speedup.svg is missing"),
    ("chart-check/missing-data", lambda run: (run / "chart-data.json").unlink(), _argv("chart", "{run}", "--check"),
     1, "chart-data.json is missing"),
    ("chart-check/no-folder", None, _argv("chart", "{ws}/no/such/folder", "--check"), 2,
     "/no/such/folder does not exist"),
    ("chart-check/stale", lambda run: _edit(run / "chart-data.json", lambda b: b.replace(b'"tiny"', b'"tinier"', 1)),
     _argv("chart", "{run}", "--check"), 1, "does not match the CSVs"),
    ("run/threads-0", None, _argv("run", "tiny", "-b", "wasm", "--threads", "0"), 2, "--threads 0"),
    ("run/lr-nan", None, _argv("run", "tiny", "--lr", "nan"), 2, "--lr nan"),
    ("run/lr-negative", None, _argv("run", "tiny", "--lr", "-0.1"), 2, "--lr -0.1"),
    ("curve/threads-negative", None, _argv("curve", "--presets", "tiny", *CHEAP, "--threads", "-2", "--out", "{ws}/new"),
     2, "--threads -2"),
    ("curve/timeout-0", None, _argv("curve", "--presets", "tiny", *CHEAP, "--timeout", "0", "--out", "{ws}/new"), 2,
     "--timeout 0"),
    ("curve/timeout-nan", None, _argv("curve", "--presets", "tiny", *CHEAP, "--timeout", "nan", "--out", "{ws}/new"),
     2, "--timeout nan"),
    ("diagnose/threads-0", None, _argv("diagnose", "tiny", "-b", "wasm", "--threads", "0", "--out", "{ws}/d"), 2,
     "--threads 0"),
    ("diagnose/timeout-inf", None, _argv("diagnose", "tiny", "-b", "wasm", "--timeout", "inf", "--out", "{ws}/d"), 2,
     "--timeout inf"),
    ("peak/threads-0", None, _argv("peak", "--quick", "--threads", "0", "--out", "{ws}/p"), 2, "--threads 0"),
    ("diagnose/out-is-a-file", None, _argv("diagnose", "tiny", "-b", "reference", "--out", "{run}/steps.csv"), 2,
     "is a file, not a folder"),
    ("peak/out-is-a-file", None, _argv("peak", "--quick", "--out", "{run}/steps.csv"), 2, "is a file, not a folder"),
    ("chart/out-is-a-file", None, _argv("chart", "{run}", "-o", "{run}/steps.csv"), 2, "is a file, not a folder"),
    ("report/out-under-a-file", None, _argv("report", "{run}", "--new-page", "{run}/steps.csv/page.md"), 2,
     "cannot write"),
    ("report/out-and-update", None, _argv("report", "{run}", "--new-page", "{ws}/a.md", "--update", "{ws}/b.md"), 2,
     "give one of --new-page"),
]
FAULT_CASES = [
    ("fault/no-colon", "wasm", "is not BACKEND:KIND"),
    ("fault/unknown-kind", "wasm:bogus", "unknown kind 'bogus'"),
    ("fault/limit-not-a-number", "webgpu:limit=lots", "limit= takes"),
    ("fault/unknown-backend", "cuda9:trap", "unknown backend 'cuda9'"),
    ("fault/backend-other-case", "Wasm:trap", "unknown backend 'Wasm'; did you mean 'wasm'?"),
    ("fault/no-backend", ":trap", "names no backend"),
]
for cmd in ("run", "curve", "diagnose"):
    for fid, spec, needle in FAULT_CASES:
        argv = {"run": ["run", "tiny", "--steps", "2"], "curve": ["curve", "--presets", "tiny", *CHEAP, "--out", "{ws}/new"],
                "diagnose": ["diagnose", "tiny", "-b", "reference", "--out", "{ws}/d"]}[cmd]
        INPUT_CASES.append((f"{cmd}/{fid}", ("env", spec), _argv(*argv), 2, needle))

ALL = CASES + INPUT_CASES


def test_the_table_is_large():
    assert len(ALL) >= 60


@pytest.mark.parametrize("case", ALL, ids=[c[0] for c in ALL])
def test_bad_input(case, good, tmp_path, run_cli, monkeypatch):
    cid, setup, argv, code, needle = case
    ws = tmp_path
    run = ws / "run"
    shutil.copytree(good, run)
    shutil.copytree(good, ws / "ref")
    if isinstance(setup, tuple):
        monkeypatch.setenv("TINYGPT_BENCH_FAULT", setup[1])
    elif setup is not None:
        setup(run)
    before = snapshot(ws)
    got, out, err = run_cli(*argv(ws, run))
    lines = err.strip().splitlines()
    assert got == code, (cid, got, out, err)
    assert len(lines) == 1, (cid, err)
    assert "Traceback" not in out + err
    assert any(n in lines[0] for n in needle.split("|")), (cid, lines[0])
    after = snapshot(ws)
    assert {p: b for p, b in after.items() if p in before} == before, f"{cid}: a results file changed"


def test_did_you_mean_only_when_a_name_is_close():
    from tinygpt_bench import engines, errors, presets

    assert errors.did_you_mean("WASM", engines.names()) == "wasm"
    assert errors.did_you_mean("smal", presets.builtin_names()) == "small"
    assert errors.did_you_mean("cuda9", engines.names()) is None
    text = str(errors.unknown("backend", "cuda9", engines.names()))
    assert "did you mean" not in text and text.startswith("unknown backend 'cuda9'; choose one of reference,")


def test_read_only_folder_is_one_line(good, tmp_path, run_cli):
    if os.geteuid() == 0:
        return _read_only_filesystem_is_one_line(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = run_cli("curve", "--presets", "tiny", *CHEAP, "--out", str(ro))
    finally:
        ro.chmod(0o755)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot write into" in err


def _read_only_filesystem_is_one_line(tmp_path):
    """As root (CI's user), which writes into a folder of mode 555: a read-only file system,
    mounted in a mount namespace of the run's own (gone with it)."""
    if shutil.which("unshare") is None:
        pytest.skip("root, and no unshare (util-linux) to mount a read-only file system")
    ro = tmp_path / "ro"
    ro.mkdir()
    mount = ("mount -t tmpfs -o ro tinygpt-ro \"$1\" || exit 99; shift; exec \"$@\"")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", str(ro),
                        sys.executable, "-m", "tinygpt_bench", "curve", "--presets", "tiny", *CHEAP, "--out",
                        str(ro / "run")], capture_output=True, text=True, timeout=120)
    if r.returncode == 99 or "unshare failed" in r.stderr:
        pytest.skip(f"root without a mount namespace of its own here: {r.stderr.strip()[:200]}")
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, (r.returncode, r.stdout[-500:], err)
    assert "cannot write into" in err and "Read-only file system" in err, err


def test_unwritable_cache_is_one_line(tmp_path, run_cli, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TINYGPT_BENCH_CACHE", str(blocker / "cache"))
    code, out, err = run_cli("run", "tiny", "--steps", "2", "--corpus", "shakespeare")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "TINYGPT_BENCH_CACHE" in err
    assert "Traceback" not in out + err


# ---- compare (item 1) ---------------------------------------------------------------------------

def test_faster_interval_brackets_the_printed_factor():
    r = stats.Ratio(1 / 3, 0.30, 0.36)
    text = compare.describe(r)
    assert text.startswith("3.00x faster")
    low, high = (float(x) for x in text.split("[")[1].rstrip("]").split("-"))
    assert low <= 3.00 <= high and (low, high) == (round(1 / 0.36, 2), round(1 / 0.30, 2))
    assert compare.describe(stats.Ratio(3.0, 2.8, 3.3)) == "3.00x slower [2.80-3.30]"


def _scaled(src: Path, dst: Path, factor: float) -> Path:
    shutil.copytree(src, dst)
    s = pd.read_csv(dst / "steps.csv")
    s["ms"] = (10.0 + (s["step"] % 3) * 0.1 + s["repeat"] * 0.05) * factor
    s.to_csv(dst / "steps.csv", index=False)
    m = pd.read_csv(dst / "measurements.csv")
    m["median_ms"] = [s[(s.backend == b) & (s.step >= 2)].ms.median() for b in m.backend]
    m.to_csv(dst / "measurements.csv", index=False)
    return dst


def test_compare_faster_end_to_end(good, tmp_path, run_cli):
    """A 3x faster NEW prints 3.00x faster with an interval around 3 (never the inverse's [0.33-0.34])."""
    good2 = tmp_path / "g"
    shutil.copytree(good, good2)
    # more steps per backend so the bootstrap has spread: duplicate repeat 1 as repeats 2..4
    s = pd.read_csv(good2 / "steps.csv")
    s = pd.concat([s.assign(repeat=r) for r in (1, 2, 3, 4)], ignore_index=True)
    s.to_csv(good2 / "steps.csv", index=False)
    old = _scaled(good2, tmp_path / "old", 3.0)
    new = _scaled(good2, tmp_path / "new", 1.0)
    for c in compare.compare(old, new):
        assert c.verdict.startswith("3.00x faster"), c.verdict
        if "[" in c.verdict:
            low, high = (float(x) for x in c.verdict.split("[")[1].rstrip("]").split("-"))
            assert low <= 3.0 <= high, c.verdict
    code, out, err = run_cli("compare", str(old), str(new))
    assert code == 0 and "3.00x faster" in out and err == ""


def test_compare_other_machine_warns_naming_the_fields(good, tmp_path, run_cli):
    other = tmp_path / "other"
    shutil.copytree(good, other)
    env = json.loads((other / "environment.json").read_text())
    env["settings"]["hostname"] = "elsewhere"
    env["settings"]["kernels_sha256"] = "0" * 64
    (other / "environment.json").write_text(json.dumps(env))
    code, out, err = run_cli("compare", str(good), str(other))
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1 and lines[0].startswith("warning:")  # the same steps: no regression
    assert "hostname" in lines[0] and "kernels_sha256" in lines[0] and "cpu_model" not in lines[0]
    code, out, err = run_cli("compare", str(good), str(good))
    assert err == ""


def test_compare_other_device_warns_naming_the_backend(good, tmp_path, run_cli):
    """Two GPU machines of one CPU model (the H100 and H200 hosts) differ in no setting but the
    device a backend ran on: that is named too."""
    other = tmp_path / "other"
    shutil.copytree(good, other)
    env = json.loads((other / "environment.json").read_text())
    backend = next(iter(env["backend_descriptions"]))
    env["backend_descriptions"][backend]["device"] = "another device"
    (other / "environment.json").write_text(json.dumps(env))
    code, out, err = run_cli("compare", str(good), str(other))
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"device of {backend}" in lines[0]


# ---- duplicates (item 4) ------------------------------------------------------------------------

def test_duplicate_presets_and_backends_are_measured_once(tmp_path, run_cli):
    out = tmp_path / "dup"
    code, _, err = run_cli("curve", "--presets", "tiny,tiny", "--backends", "reference,reference", "--steps", "2",
                           "--repeats", "1", "--out", str(out), "--plain", "--no-chart")
    assert code == 0, err
    m = pd.read_csv(out / "measurements.csv")
    assert list(zip(m.preset, m.backend)) == [("tiny", "reference")]
    assert len(pd.read_csv(out / "steps.csv")) == 2
    env = json.loads((out / "environment.json").read_text())
    assert env["presets"] == ["tiny"] and env["backends"] == ["reference"]


# ---- transactions, atomic files, the folder lock (item 5) ----------------------------------------

def test_steps_without_their_row_do_not_count_and_resume_removes_them(good, tmp_path, run_cli):
    run = tmp_path / "run"
    shutil.copytree(good, run)
    before_summary = run_cli("summary", str(run), "--markdown")[1]
    # a measurement killed between its steps and its row: steps of another run id, no row
    env = json.loads((run / "environment.json").read_text())
    w = results.ResultWriter(run, env, resume=True)
    w.steps([results.Step(run_id="killed-run", preset="tiny", backend="reference", repeat=1, step=s,
                          ms=1e6, loss=5.0) for s in (1, 2)])
    w.close()
    assert b"killed-run" in (run / "steps.csv").read_bytes()
    steps = results.read_steps([run])
    assert "killed-run" not in set(steps.run_id) and steps.ms.max() < 1e6
    assert run_cli("summary", str(run), "--markdown")[1] == before_summary
    code, _, err = run_cli("curve", "--presets", "tiny", *CHEAP, "--out", str(run), "--resume", "--no-chart")
    assert code == 0, err
    assert b"killed-run" not in (run / "steps.csv").read_bytes()
    assert (run / "steps.csv").read_bytes() == (good / "steps.csv").read_bytes()


def test_a_failed_write_keeps_the_old_file(good, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(good, run)
    env = json.loads((run / "environment.json").read_text())
    w = results.ResultWriter(run, env, resume=True)
    old = (run / "environment.json").read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.store.os, "fsync", disk_full)
    try:
        with pytest.raises(results.UserError, match="No space left"):
            w.environment({**env, "presets": ["tiny", "small"]})
        with pytest.raises(results.UserError, match="No space left"):
            w.measurement(results.Measurement(run_id="x", preset="small", backend="reference", status="ok"))
    finally:
        monkeypatch.undo()
        w.close()
    assert (run / "environment.json").read_bytes() == old
    assert (run / "measurements.csv").read_bytes() == (good / "measurements.csv").read_bytes()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_folder_in_use_is_refused_naming_the_holder(good, tmp_path, run_cli):
    run = tmp_path / "run"
    shutil.copytree(good, run)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tinygpt_bench import results; "
                               "results.FolderLock(sys.argv[1]); print('locked', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        for extra in (["--resume"], []):
            code, out, err = run_cli("curve", "--presets", "tiny", *CHEAP, "--out", str(run), *extra)
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"in use by another tinygpt-bench run (pid {holder.pid})" in err
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead: its lock (the file still names it) is taken over
    assert (run / results.LOCK).read_text().strip() == str(holder.pid)
    code, _, err = run_cli("curve", "--presets", "tiny", *CHEAP, "--out", str(run), "--resume", "--no-chart")
    assert code == 0, err
    assert not (run / results.LOCK).exists()


def test_header_only_folder_resumes(good, tmp_path, run_cli):
    """Ctrl-C in the first preset leaves measurements.csv with its header alone: the readers
    refuse it with the fix (the table above), and that fix works."""
    run = tmp_path / "run"
    shutil.copytree(good, run)
    header_only(run)
    code, _, err = run_cli("curve", "--presets", "tiny", *CHEAP, "--out", str(run), "--resume", "--no-chart")
    assert code == 0, err
    assert len(pd.read_csv(run / "measurements.csv")) == 2


# ---- no traceback on any path (item 6) ----------------------------------------------------------

def test_unexpected_error_is_one_line_with_a_saved_traceback(good, run_cli, monkeypatch):
    from tinygpt_bench import report

    def boom(*a, **k):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(report, "summary_rows", boom)
    code, out, err = run_cli("summary", str(good))
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in out + err
    assert "RuntimeError: something nobody foresaw" in lines[0]
    path = Path(lines[0].split("traceback saved to ")[1].split(" ")[0])
    try:
        assert "Traceback" in path.read_text() and "something nobody foresaw" in path.read_text()
    finally:
        path.unlink()
    code, out, err = run_cli("--debug", "summary", str(good))
    assert code == 1 and "Traceback" in err and "something nobody foresaw" in err


def test_every_committed_results_folder_reads_whole():
    """Each committed folder's measurements and steps read back every row the files hold."""
    root = Path(__file__).resolve().parents[1] / "results"
    for run in sorted(p.parent for p in root.glob("*/measurements.csv")):
        df = results.read_measurements([run])
        steps = results.read_steps([run])
        raw = pd.read_csv(run / "steps.csv")
        assert len(df) == len(pd.read_csv(run / "measurements.csv")) and len(steps) == len(raw)


@pytest.mark.parametrize("argv", [["--out", "page.md"], ["-o", "page.md"], ["--out=page.md"]])
def test_report_out_names_its_new_flag(argv, good, tmp_path, run_cli, monkeypatch):
    """report's page was --out FILE before the flags were declared once (--out is a folder
    everywhere else): the old spelling is one line naming --new-page, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("report", str(good), *argv)
    assert code == 2 and err.strip() == ("error: report --out is now --new-page FILE (a new page; --out is a "
                                         "folder in every other command)")
    assert not (tmp_path / "page.md").exists()
