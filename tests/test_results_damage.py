"""Damaged result files (issue 26): every reader and `curve --resume` refuses a damaged file in
one line naming the file, the line and a fix that loses nothing, and leaves every file byte for
byte as it was; or it gives the correct result. Resume writes rows by column name, never glued
to a last row without its line end."""

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tinygpt_bench import cli, results

CHEAP = ["--backends", "reference", "--steps", "2", "--repeats", "1", "--plain", "--no-chart"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One run of tiny on the reference backend, made once; tests work on copies of it."""
    out = tmp_path_factory.mktemp("good") / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(["curve", "--presets", "tiny", *CHEAP, "--out", str(out)])
    assert e.value.code in (0, None)
    return out


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != results.LOCK}


def copy(good: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(good, run)
    return run


def resume(run_cli, run: Path):
    return run_cli("curve", "--presets", "tiny", *CHEAP, "--out", str(run), "--resume")


def earlier(run: Path, columns=None):
    """The folder as if its one measurement were of an earlier preset ('earlier'): --resume then
    measures tiny and appends its rows after that one. columns: the order to write them in.
    Returns that measurement as read back."""
    for name in (results.MEASUREMENTS, results.STEPS):
        df = pd.read_csv(run / name, dtype=str, keep_default_na=False)
        df["preset"] = "earlier"
        df[columns(df) if columns else df.columns].to_csv(run / name, index=False, lineterminator="\n")
    (m,) = results.measurements([run])
    return m


def measured_after(run: Path, before) -> None:
    """The earlier measurement as it was (every field) and tiny's after it, whole, none glued
    or shifted."""
    m = results.measurements([run])
    assert [(r.preset, r.backend) for r in m] == [("earlier", "reference"), ("tiny", "reference")]
    assert dataclasses.asdict(m[0]) == dataclasses.asdict(before) and m[1].n_samples == 1
    assert m[1].q1_ms <= m[1].median_ms <= m[1].q3_ms and m[1].flops_per_step == m[0].flops_per_step
    steps = results.steps([run])
    assert sorted((s.preset, s.step) for s in steps) == [("earlier", 1), ("earlier", 2), ("tiny", 1), ("tiny", 2)]
    assert all(0 < s.ms < 1e5 and 1 < s.loss < 10 for s in steps)


def one_line(code, out, err, expect=2):
    lines = err.strip().splitlines()
    assert code == expect and len(lines) == 1 and "Traceback" not in out + err, (code, err)
    return lines[0]


@pytest.mark.parametrize("name", [results.MEASUREMENTS, results.STEPS])
def test_resume_refuses_a_file_without_its_final_line_end_and_the_fix_works(name, good, tmp_path, run_cli):
    run = copy(good, tmp_path)
    before_row = earlier(run)
    path = run / name
    path.write_bytes(path.read_bytes()[:-1])
    before = snapshot(run)
    line = one_line(*resume(run_cli, run))
    n = path.read_bytes().count(b"\n") + 1
    assert f"{path}, line {n}" in line and "echo >>" in line
    assert snapshot(run) == before
    with open(path, "ab") as f:  # the fix the line names: the row was whole
        f.write(b"\n")
    code, _, err = resume(run_cli, run)
    assert code == 0, err
    measured_after(run, before_row)


@pytest.mark.parametrize("name", [results.MEASUREMENTS, results.STEPS])
def test_resume_appends_by_column_name_to_a_file_of_reordered_columns(name, good, tmp_path, run_cli):
    run = copy(good, tmp_path)
    before_row = earlier(run, lambda df: list(reversed(df.columns)))
    header = (run / name).read_bytes().splitlines()[0]
    code, _, err = resume(run_cli, run)
    assert code == 0, err
    measured_after(run, before_row)
    assert (run / name).read_bytes().splitlines()[0] == header


def test_a_writer_appending_after_a_missing_line_end_never_glues(good, tmp_path):
    """The writer's own guard, beneath resume's check: a line end first."""
    run = copy(good, tmp_path)
    path = run / results.STEPS
    path.write_bytes(path.read_bytes()[:-1])
    w = results.ResultWriter.__new__(results.ResultWriter)
    w.dir = run
    w._append(path, results.Step, [results.Step(run_id="r", preset="p", backend="b", repeat=1, step=1, ms=1.0,
                                                loss=2.0)])
    assert path.read_bytes().endswith(b"\n2,r,p,b,1,1,1.0,2.0\n")
    assert len(results.readers.step_file(path)) == 3


# ---- a preset is its shape; names that become file names are safe ------------------------------

def test_resume_refuses_a_preset_name_measured_with_another_shape(good):
    """decide() is pure: the same name with another shape is a refusal, and nothing changes."""
    env = results.load_environment(good / results.ENVIRONMENT)
    before, mine = snapshot(good), {**env, "presets": ["tiny"]}
    same = results.shape_id(1, 32, 2, 32, 2)
    m = results.measurements([good])[0]
    here = results.shape_id(m.layers, m.d_model, m.heads, m.ctx, m.batch)
    d = results.decide(good, mine, True, shapes={"tiny": same if same != here else results.shape_id(9, 9, 9, 9, 9)})
    assert "another shape" in d.refusal and "own name" in d.refusal and d.keep == frozenset()
    ok = results.decide(good, mine, True, shapes={"tiny": here})
    assert ok.refusal == "" and ok.keep == {("tiny", "reference")} and ok.measure([("tiny", "reference")]) == []
    assert mine == {**env, "presets": ["tiny"]} and ok.environment is not mine  # the caller's data unchanged
    assert snapshot(good) == before


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", "x" * 300, "tab\there", "-dash"])
def test_a_preset_name_that_is_no_safe_file_name_is_refused(name, tmp_path, run_cli):
    toml = tmp_path / "p.toml"
    toml.write_text(f'name = "{name}"\nlayers = 1\nd_model = 32\nheads = 2\nctx = 16\nbatch = 2\n'
                    .replace("\t", "\\t"))
    out = tmp_path / "out"
    line = one_line(*run_cli("curve", "--presets", str(toml), *CHEAP, "--out", str(out)))
    assert "cannot be part of a file name" in line and str(toml) in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]


@pytest.mark.parametrize("argv", [["curve", "--presets", "tiny", *CHEAP, "--out", ""],
                                  ["curve", "--presets", "tiny", *CHEAP, "--out="],
                                  ["chart", "RESULTS", "-o", ""], ["report", "RESULTS", "--update", " "]])
def test_an_empty_output_path_is_refused(argv, good, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(good) if a == "RESULTS" else a for a in argv]
    line = one_line(*run_cli(*argv))
    assert "names no folder or file" in line
    assert list(tmp_path.iterdir()) == []


# ---- compare's threshold; a mix of runs said; the traceback paths of issue 26 ------------------

@pytest.mark.parametrize("threshold", ["0.5", "0.999", "0", "-2", "nan", "inf"])
def test_compare_refuses_a_threshold_that_cannot_mean_a_slow_down(threshold, good, run_cli):
    line = one_line(*run_cli("compare", str(good), str(good), "--threshold", threshold))
    assert f"--threshold {float(threshold)}" in line and "1 or more" in line


def test_compare_takes_a_threshold_of_one(good, run_cli):
    code, out, err = run_cli("compare", str(good), str(good), "--threshold", "1")
    assert code == 0, err


def test_summary_and_chart_say_when_runs_differ_in_settings(good, tmp_path, run_cli):
    other = copy(good, tmp_path)
    env = results.load_environment(other / results.ENVIRONMENT)
    env["settings"] = {**env["settings"], "repeats": 7}
    (other / results.ENVIRONMENT).write_text(__import__("json").dumps(env))
    code, _, err = run_cli("summary", str(good), str(other), "--markdown")
    assert code == 0 and "warning:" in err and "repeats" in err
    from tinygpt_bench import chart

    assert chart.chart_data([good, other])["title"].startswith("MIXED RUNS (repeats differ)")
    assert not chart.chart_data([good])["title"].startswith("MIXED")
    code, _, err = run_cli("summary", str(good), "--markdown")
    assert code == 0 and "warning" not in err


def _plugin(tmp_path, text):
    d = tmp_path / "plug" / "bad"
    d.mkdir(parents=True)
    (d / "__init__.py").write_text(text)
    return d.parent


@pytest.mark.parametrize("text", ["raise RuntimeError('boom')", "import no_such_module_here", "def broken(:\n"])
def test_an_engine_plugin_that_fails_to_import_is_one_line(text, tmp_path):
    import subprocess
    import sys

    env = {**__import__("os").environ, "TINYGPT_BENCH_ENGINES": str(_plugin(tmp_path, text))}
    # run loads the registry (presets, which needs no engine, does not: it runs whatever the plugins)
    r = subprocess.run([sys.executable, "-m", "tinygpt_bench", "run", "tiny"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "TINYGPT_BENCH_ENGINES" in r.stderr and "fails to import" in r.stderr


def test_run_refuses_a_step_count_whose_batches_cannot_fit(run_cli):
    line = one_line(*run_cli("run", "tiny", "--backend", "reference", "--steps", "100000000", "--plain"))
    assert "--steps 100000000" in line and "GiB" in line


def test_a_path_name_too_long_is_one_line(tmp_path, run_cli):
    line = one_line(*run_cli("curve", "--presets", "tiny", *CHEAP, "--out", str(tmp_path / ("x" * 300))))
    assert "File name too long" in line


def test_chart_check_refuses_an_empty_png(good, tmp_path, run_cli):
    run = copy(good, tmp_path)
    assert run_cli("chart", str(run))[0] == 0
    (run / "speedup.png").write_bytes(b"")
    code, out, err = run_cli("chart", str(run), "--check")
    assert code == 1 and "speedup.png is empty" in err and "Traceback" not in out + err


# ---- a full disk, a kill before the rename, the umask -----------------------------------------

def _temps(run: Path) -> list[Path]:
    return [p for p in run.rglob("*.tmp")]


def _added() -> tuple:
    m = results.Measurement(run_id="new", preset="added", backend="reference", status="ok", layers=1, params=10,
                            flops_per_step=100, median_ms=2.5)
    return m, [results.Step(run_id="new", preset="added", backend="reference", repeat=1, step=1, ms=2.5, loss=3.0)]


def test_a_full_disk_leaves_no_temporary_file_and_the_retry_succeeds(good, tmp_path, monkeypatch):
    run = copy(good, tmp_path)
    env = results.load_environment(run / results.ENVIRONMENT)
    w = results.ResultWriter(run, env, resume=True)
    before = snapshot(run)
    written = []

    def full(fd, data):  # the disk fills after the first 100 bytes of a file
        written.append(len(data))
        import os

        os.write(fd, bytes(data[:100]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.store, "_write_all", full)
    try:
        with pytest.raises(results.UserError, match="No space left on device.*--resume"):
            w.commit(*_added())
        assert written and not _temps(run) and snapshot(run) == before
        monkeypatch.undo()  # space is back
        w.commit(*_added())
    finally:
        w.close()
    assert not _temps(run)
    assert [m.preset for m in results.measurements([run])] == ["tiny", "added"]
    assert [s.preset for s in results.steps([run])] == ["tiny", "tiny", "added"]


def test_a_write_killed_before_its_rename_leaves_nothing_that_blocks_the_retry(good, tmp_path, run_cli):
    import subprocess
    import sys

    run = copy(good, tmp_path)
    path = run / results.MEASUREMENTS
    old = path.read_bytes()
    code = ("import os, signal, sys; from tinygpt_bench.results import store; "
            "store.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
            "store.atomic_write(sys.argv[1], open(sys.argv[1], 'rb').read() + b'x')")
    r = subprocess.run([sys.executable, "-c", code, str(path)])
    assert r.returncode == -9
    (stale,) = _temps(run)
    assert stale.name.startswith(f".{results.MEASUREMENTS}.") and path.read_bytes() == old
    (run / ".steps.csv.k3j2h1.tmp").write_bytes(b"an older tinygpt-bench's temporary file")
    results.atomic_write(path, old)  # the retry: the dead writer's file is removed
    assert _temps(run) == [run / ".steps.csv.k3j2h1.tmp"] and path.read_bytes() == old
    code, _, err = resume(run_cli, run)  # under the folder's lock: every temporary file of ours
    assert code == 0, err
    assert not _temps(run) and path.read_bytes() == old


def test_a_file_gets_the_umask_mode_or_keeps_its_own(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        new = tmp_path / "new.md"
        results.atomic_write(new, b"a\n")
        assert new.stat().st_mode & 0o777 == 0o644
        os.chmod(new, 0o664)
        results.atomic_write(new, b"b\n")
        assert new.stat().st_mode & 0o777 == 0o664 and new.read_bytes() == b"b\n"
        os.umask(0o077)
        results.atomic_write(tmp_path / "private.md", b"c\n")
        assert (tmp_path / "private.md").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(mask)
