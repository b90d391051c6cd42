"""The committed reference runs under results/: their charts match their CSVs, the
README's table is the summary of the committed CSV, and docs/performance.md's generated
block is the report of its results folder, number for number."""

from pathlib import Path

import pytest

from tinygpt_bench import chart, markdown, report, results

ROOT = Path(__file__).resolve().parents[1]
RUNS = sorted(p.parent for p in (ROOT / "results").glob("*/measurements.csv"))


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_committed_chart_matches_its_csv(run):
    assert chart.check([run], run / chart.CHART_DATA) == []
    assert (run / "speedup.png").is_file() and (run / "speedup.svg").is_file()


@pytest.mark.parametrize("machine", ["cpu-2core", "h100", "h200"])
def test_readme_table_is_the_committed_csv(machine):
    run = ROOT / "results" / machine
    if not (run / "measurements.csv").is_file():
        pytest.skip(f"no committed {machine} run")
    df = results.read_measurements([run])
    table = markdown.table(*report.summary_rows(df, results.read_steps([run])))
    assert table in (ROOT / "README.md").read_text()


PAGE = ROOT / "docs" / "performance.md"
PEAK_RUNS = sorted(p.parent for p in (ROOT / "results").glob("*/peaks.csv"))


def test_performance_page_is_its_results():
    """docs/performance.md's generated block is what `tinygpt-bench report` makes of the
    results folder its marker names (a folder with peaks.csv), number for number."""
    from tinygpt_bench import perfpage

    if not PAGE.is_file() or not PEAK_RUNS:
        pytest.skip("no docs/performance.md or no results folder with peaks.csv yet")
    _, source, block, _ = perfpage.split_page(PAGE.read_text(), PAGE)
    run = (PAGE.parent / source).resolve()
    assert run in [r.resolve() for r in PEAK_RUNS], f"the page renders {source}, not a results folder with peaks.csv"
    assert block == perfpage.generated_block(run, PAGE), (
        f"docs/performance.md is stale: `tinygpt-bench report {run.relative_to(ROOT)} --update docs/performance.md`")


KEPT = sorted(p for p in (ROOT / "results").glob(f"*/{results.IN_PROGRESS}/*.json"))


@pytest.mark.parametrize("kept", KEPT, ids=[f"{k.parents[1].name}/{k.stem}" for k in KEPT])
def test_committed_repeats_in_progress_can_be_resumed(kept):
    """A committed folder's unfinished measurement (its finished repeats, waiting for a later
    device call's `curve --resume`): kept under the folder's settings, and its engine's artifacts
    (the wasm module, the kernels) are this checkout's, so a resume takes the repeats up rather
    than dropping them. Editing an artifact first would throw those device minutes away."""
    import json

    from tinygpt_bench import engines

    state = json.loads(kept.read_text())
    env = results.load_environment(kept.parents[1] / results.ENVIRONMENT)
    assert state["format_version"] == results.FORMAT_VERSION
    assert state["settings_id"] == env["settings_id"] == results.settings_id(env["settings"])
    preset, backend = kept.stem.split("__")
    assert backend in env["backends"] and preset in env["presets"]
    now = engines.digests()
    for key in engines.spec(backend)[0].artifacts:
        assert env["settings"][key] == now[key], (
            f"{key} changed since {kept.parents[1].name}'s kept {backend} repeats: finish that run first")
    assert state["repeats"] == len(state["acc"]["timelines"]) >= 1
