"""Damaged result files (issue 26): every reader and `curve --resume` refuses a damaged file in
one line naming the file, the line and a fix that loses nothing, and leaves every file byte for
byte as it was; or it gives the correct result. Resume writes rows by column name, never glued
to a last row without its line end."""

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


def earlier(run: Path, columns=None) -> None:
    """The folder as if its one measurement were of an earlier preset ('earlier'): --resume then
    measures tiny and appends its rows after that one. columns: the order to write them in."""
    for name in (results.MEASUREMENTS, results.STEPS):
        df = pd.read_csv(run / name, dtype=str, keep_default_na=False)
        df["preset"] = "earlier"
        df[columns(df) if columns else df.columns].to_csv(run / name, index=False, lineterminator="\n")


def measured_after(run: Path) -> None:
    """The earlier measurement and tiny's, each whole, none glued or shifted."""
    m = results.measurements([run])
    assert [(r.preset, r.backend) for r in m] == [("earlier", "reference"), ("tiny", "reference")]
    assert m[0].median_ms == pytest.approx(m[1].median_ms, rel=10) and m[1].n_samples == 1
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
    earlier(run)
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
    measured_after(run)


@pytest.mark.parametrize("name", [results.MEASUREMENTS, results.STEPS])
def test_resume_appends_by_column_name_to_a_file_of_reordered_columns(name, good, tmp_path, run_cli):
    run = copy(good, tmp_path)
    earlier(run, lambda df: list(reversed(df.columns)))
    header = (run / name).read_bytes().splitlines()[0]
    code, _, err = resume(run_cli, run)
    assert code == 0, err
    measured_after(run)
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
