"""The committed reference runs under results/: their charts match their CSVs, and the
README's table is the summary of the committed CSV, number for number."""

from pathlib import Path

import pytest

from tinygpt_bench import chart, report, results

ROOT = Path(__file__).resolve().parents[1]
RUNS = sorted(p.parent for p in (ROOT / "results").glob("*/measurements.csv"))


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_committed_chart_matches_its_csv(run):
    assert chart.check([run], run / chart.CHART_DATA) == []
    assert (run / "speedup.png").is_file() and (run / "speedup.svg").is_file()


def test_readme_table_is_the_committed_csv():
    cpu = ROOT / "results" / "cpu-2core"
    if not (cpu / "measurements.csv").is_file():
        pytest.skip("no committed CPU reference run")
    df = results.read_measurements([cpu])
    table = report.markdown_table(*report.summary_rows(df, results.read_steps([cpu])))
    assert table in (ROOT / "README.md").read_text()
