"""report --html (issue 27): one self-contained page, its chart as SVG, opened in the headless
Chromium the README installs: it renders, with no console error and nothing fetched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tinygpt_bench import browser
from tinygpt_bench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _chromium():
    try:
        return browser.Chromium(name="Chromium")
    except UserError as e:
        if os.environ.get("TINYGPT_BENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))


def test_the_html_report_renders_in_chromium_without_console_errors(tmp_path, run_cli):
    page = tmp_path / "h200.html"
    code, out, err = run_cli("report", str(ROOT / "results" / "h200"), "--html", str(page))
    assert code == 0, out + err
    html = page.read_text()
    assert "<svg" in html and "<table>" in html and "<img" not in html and "generated:start" not in html
    c = _chromium()
    try:
        c.start()
        c.open(page.as_uri())
        got = c.evaluate("({tables: document.querySelectorAll('table').length,"
                         " svg: document.querySelector('svg').getBBox().width,"
                         " fetched: performance.getEntriesByType('resource').length})")
        assert got["tables"] >= 3 and got["svg"] > 100 and got["fetched"] == 0  # self-contained
        assert not [x for x in c.console if "error" in x.lower() or x.startswith("exception")], c.console
    finally:
        c.close()


def test_a_folder_without_its_chart_is_one_line(tmp_path, run_cli):
    import shutil

    folder = tmp_path / "cpu"
    shutil.copytree(ROOT / "results" / "cpu-2core", folder)
    (folder / "speedup.svg").unlink()
    code, out, err = run_cli("report", str(folder), "--html", str(tmp_path / "x.html"))
    assert code == 2 and "has no speedup.svg; draw it first" in out + err
