"""The one Markdown table renderer (summary, performance page, diagnose reports)."""

from __future__ import annotations


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: the header, its separator, one line a row; a '|' inside a cell is
    escaped so it cannot split the cell."""
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|"] + [line(r) for r in rows])
