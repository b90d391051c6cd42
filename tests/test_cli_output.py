"""What the commands print, in each of their formats: summary and curve's closing summary (table,
Markdown), compare (table, Markdown, JSON), summary --json, the help and version. In-process CLI
calls on one cheap run (the numpy reference backends, tiny, 2 steps)."""

import json
import shutil

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
