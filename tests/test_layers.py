"""Import rules between the measuring commands (issue 28, first part): curve, diagnose and peak do
not import each other; what two of them share (the preflight) sits below them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tinygpt_bench"
COMMANDS = ("curve", "diagnose", "peak")


def imported(module: str) -> set[str]:
    """The tinygpt_bench modules `module` imports, anywhere in it (functions included)."""
    out = set()
    for node in ast.walk(ast.parse((PKG / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinygpt_bench"):
            if node.module == "tinygpt_bench":
                out |= {a.name for a in node.names}
            else:
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tinygpt_bench.")}
    return out


@pytest.mark.parametrize("module", COMMANDS)
def test_a_measuring_command_imports_no_other(module):
    others = set(COMMANDS) - {module}
    assert not imported(module) & others, f"{module} imports {sorted(imported(module) & others)}"


def test_the_preflight_sits_below_the_commands():
    assert not imported("preflight") & set(COMMANDS)
