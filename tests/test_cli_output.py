"""What the commands print, in each of their formats: summary and curve's closing summary (table,
Markdown), compare (table, Markdown, JSON), summary --json, the help and version. In-process CLI
calls on one cheap run (the numpy reference backends, tiny, 2 steps)."""

import json
import shutil
from pathlib import Path

import pytest

from tinygpt_bench import cli

CHEAP = ["--backends", "reference,reference-fp32", "--steps", "2", "--repeats", "1", "--plain"]
TITLE = "summary (ms/step"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(["curve", "--presets", "tiny", *CHEAP, "--out", str(out), "--no-chart"])
    assert e.value.code in (0, None)
    return out


def _markdown_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_summary_prints_a_table_or_only_markdown(run, run_cli):
    code, out, err = run_cli("summary", str(run))
    assert code == 0 and err == ""
    assert TITLE in out and "reference-fp32" in out and not _markdown_lines(out)
    code, out, err = run_cli("summary", str(run), "--markdown")
    assert code == 0 and err == ""
    assert TITLE not in out and out.startswith("| preset | params |") and len(_markdown_lines(out)) == 2


def test_curve_prints_its_summary_once_and_markdown_only_when_asked(run, tmp_path, run_cli):
    """A finished folder resumed measures nothing and prints the closing summary: the table once,
    and the Markdown table only with --markdown."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    argv = ["curve", "--presets", "tiny", *CHEAP, "--out", str(copy), "--resume", "--no-chart"]
    code, out, err = run_cli(*argv)
    assert code == 0, err
    assert "2 steps x 1 repeat ->" in out  # not "1 repeats"
    assert out.count(TITLE) == 1 and not _markdown_lines(out)
    code, out, err = run_cli(*argv, "--markdown")
    assert code == 0, err
    assert out.count(TITLE) == 1 and len(_markdown_lines(out)) == 2


def test_version_and_h(run_cli):
    from tinygpt_bench import __version__

    assert run_cli("--version") == (0, f"tinygpt-bench {__version__}\n", "")
    for argv in ([], ["curve"], ["summary"]):
        code, long, _ = run_cli(*argv, "--help")
        assert code == 0 and "Usage: tinygpt-bench" in long
        assert run_cli(*argv, "-h") == (0, long, "")


@pytest.mark.parametrize("command", ["run", "curve", "summary", "chart", "compare", "diagnose", "peak", "report"])
def test_help_names_values_not_python_types(command, run_cli):
    """A flag shows no type (Typer printed `<bool>`), a value a name such as TEXT or SECONDS."""
    code, out, _ = run_cli(command, "--help")
    assert code == 0
    options = [line for line in out.splitlines() if line.lstrip("│ ").startswith("--")]
    assert options and not [line for line in options if "<" in line]
    assert "<bool>" not in out and "<str>" not in out.split("Options")[1]


SUMMARY_KEYS = ["baseline", "presets", "backends", "results"]
SUMMARY_ROW_KEYS = ["preset", "backend", "params", "status", "median_ms", "q1_ms", "q3_ms", "n_samples", "speedup",
                    "speedup_low", "speedup_high", "loss_rel_diff_backends", "loss_rel_diff_reference", "parity_ok"]


def test_summary_json_keys_are_pinned(run, run_cli):
    code, out, err = run_cli("summary", str(run), "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert list(data) == SUMMARY_KEYS
    assert data["baseline"] == "reference" and data["presets"] == ["tiny"]
    assert data["backends"] == ["reference", "reference-fp32"]
    base, other = data["results"]
    assert list(base) == SUMMARY_ROW_KEYS and list(other) == SUMMARY_ROW_KEYS
    assert base["speedup"] is None and other["speedup"] > 0 and other["status"] == "ok"
    assert base["median_ms"] > 0 and base["parity_ok"] is True
    code, _, err = run_cli("summary", str(run), "--json", "--markdown")
    assert code == 2 and "give one of them" in err


@pytest.fixture
def old_new(run, tmp_path, monkeypatch):
    """OLD: the run; NEW: the run with reference-fp32 measured on 'small' instead of 'tiny', so
    each side has one (preset, backend) the other lacks. Short relative paths: a table's title
    wraps."""
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    old, new = Path("old"), Path("new")
    shutil.copytree(run, old)
    shutil.copytree(run, new)
    for name in ("measurements.csv", "steps.csv"):
        df = pd.read_csv(new / name, dtype=str, keep_default_na=False)
        df.loc[df.backend == "reference-fp32", "preset"] = "small"
        df.to_csv(new / name, index=False)
    return old, new


def test_compare_title_in_argument_order_and_one_sided_backends_named(old_new, run_cli):
    old, new = old_new
    code, out, err = run_cli("compare", str(old), str(new))
    assert code == 0 and err == "", err  # the same steps on both sides: no regression
    text = " ".join(out.split())
    assert f"{old} vs {new}" in text and f"{new} vs {old}" not in text
    assert f"not compared: reference-fp32 (tiny) only in {old}; reference-fp32 (small) only in {new}" in text
    code, md, _ = run_cli("compare", str(old), str(new), "--markdown")
    assert md.startswith(f"{old} vs {new}") and "| preset | backend | old ms | new ms | change |" in md
    assert sum(line.startswith("| tiny | reference |") for line in md.splitlines()) == 1
    assert "reference-fp32 (small) only in" in md


COMPARE_KEYS = ["old", "new", "threshold", "changes", "only_in_old", "only_in_new", "settings_differ", "regressions"]
CHANGE_KEYS = ["preset", "backend", "old_ms", "new_ms", "ratio", "ratio_low", "ratio_high", "significant", "verdict",
               "regression"]


def test_compare_json_keys_are_pinned(old_new, run_cli):
    old, new = old_new
    code, out, err = run_cli("compare", str(old), str(new), "--json", "--threshold", "1e9")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert list(data) == COMPARE_KEYS
    assert (data["old"], data["new"], data["threshold"], data["regressions"]) == (str(old), str(new), 1e9, 0)
    (change,) = data["changes"]
    assert list(change) == CHANGE_KEYS
    assert (change["preset"], change["backend"], change["ratio"]) == ("tiny", "reference", 1.0)
    assert data["only_in_old"] == [{"preset": "tiny", "backend": "reference-fp32"}]
    assert data["only_in_new"] == [{"preset": "small", "backend": "reference-fp32"}]
    assert data["settings_differ"] == []
    assert run_cli("compare", str(old), str(new), "--json", "--markdown")[0] == 2


PEAK_ROWS = [  # as peak.measure reports them, the figures made up
    {"engine": "wasm", "kind": "peak", "what": "simd128_mul_add", "threads": 1, "size": "1000 rounds x 12 f32x4 "
     "chains x 1 threads", "gflop_per_s": 15.3, "status": "ok", "note": None},
    {"engine": "wasm", "kind": "peak", "what": "simd128_relaxed_fma", "threads": 2, "size": "1000 rounds x 12 f32x4 "
     "chains x 2 threads", "gflop_per_s": 46.6, "status": "ok", "note": None},
    {"engine": "webgpu-dawn", "kind": "matmul", "what": "matmul best kernel", "threads": None,
     "device": "llvmpipe (LLVM 15.0.6, 256 bits)", "size": "256x256x256", "gflop_per_s": 1234.5, "status": "ok",
     "note": "kernels matmul.wgsl:matmul_big_pf (others, GFLOP/s: direct 2, shared 1); timestamp queries"},
    {"engine": "torch-cuda", "kind": "matmul", "what": "matmul", "threads": None, "device": None, "size": None,
     "gflop_per_s": None, "status": "skipped", "note": "No module named 'torch'"},
]


def test_peak_prints_its_rows_in_aligned_columns(tmp_path, run_cli, monkeypatch):
    """Each row printed as it is measured lines up with the header (the engine names, the
    figures' right edge), and a thread count is said once, in the singular for one."""
    from tinygpt_bench import peak

    def measure(out, threads, adapter, quick, on_row):
        for r in PEAK_ROWS:
            on_row(r)
        return PEAK_ROWS

    monkeypatch.setattr(peak, "measure", measure)
    code, out, err = run_cli("peak", "--quick", "--out", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("engine "))
    edge = header.index("GFLOP/s") + len("GFLOP/s")
    for r, figure in zip(PEAK_ROWS, ["15.3", "46.6", "1,234.5", "skipped"]):
        line = next(line for line in lines if line.startswith(r["engine"] + " ") and f" {r['what']} " in line)
        assert line[header.index("kind"):].startswith(r["kind"] + " ")
        assert line[header.index("what"):].startswith(r["what"] + " ")
        assert line[:edge].endswith(" " + figure) and line[edge] == " "
    assert "1 thread " in out and "2 threads " in out
    assert "1 threads" not in out and "x 2 threads" not in out  # the size leaves the count to its column
