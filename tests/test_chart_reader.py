"""The chart as a reader sees it (issue 27): preset names once on every panel, one legend entry
per backend, legends under the panels, a cell not measured said so."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tinygpt_bench import chart  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _drawn(folder: str, tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    chart.draw(chart.chart_data([ROOT / "results" / folder]), tmp_path)
    return figs[0]


def test_presets_once_a_panel_one_legend_entry_per_backend_and_cells_not_measured(tmp_path, monkeypatch):
    fig = _drawn("h200", tmp_path, monkeypatch)
    panels = [a for a in fig.axes if a.get_legend() is not None]
    assert len(panels) == 3
    for ax in panels:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(labels) == len(set(labels)) and not any(lab.startswith("fit:") for lab in labels)
        # below the panel: where the legend is drawn (its anchor box is the panel's own when no
        # anchor is given, so the anchor alone says nothing)
        renderer = fig.canvas.get_renderer()
        assert ax.get_legend().get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0
        notes = [t.get_text() for t in ax.texts]
        assert sum("not measured" in n for n in notes) == 1  # behemoth, once a panel
        assert not any(n in ("tiny", "small", "behemoth") for n in notes)  # names are not beside points
    tops = [c for ax in panels for c in ax.child_axes]  # the secondary axes carrying the preset names
    assert len(tops) == len(panels)
    for top in tops:
        names = [t.get_text() for t in top.get_xticklabels()]
        assert "tiny" in names and "massive/mega" in names and "behemoth" in names
