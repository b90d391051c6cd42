"""The runner (issue 28): one way of timing steps for every command that times them; settings
checked once, typed and immutable; the worker's messages typed; the schedule of repeats and its
budget; no function over 60 lines."""

from __future__ import annotations

import ast
import dataclasses
import pickle
import time
from pathlib import Path

import pytest

from tinygpt_bench import presets, protocol, runner
from tinygpt_bench.errors import UserError
from tinygpt_bench.runner import messages

PKG = Path(__file__).resolve().parents[1] / "tinygpt_bench"
MAX_LINES = 60


def long_functions(folder: Path) -> list[str]:
    out = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    where = path.relative_to(PKG) if path.is_relative_to(PKG) else path.name
                    out.append(f"{where}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_of_the_runner_or_curve_is_over_60_lines(tmp_path):
    assert long_functions(PKG / "runner") == []
    assert [f for f in long_functions(PKG) if f.startswith("curve.py")] == []
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * MAX_LINES)  # the check finds a long one
    assert [f.split(" ")[1] for f in long_functions(tmp_path)] == ["f"]


def tiny(**kw) -> runner.Settings:
    return runner.Settings(presets=(presets.load("tiny"),), backends=("reference-fp32",), **kw)


@pytest.mark.parametrize("kw, message", [
    ({"steps": 0}, "--steps 0 is not a positive number of steps"),
    ({"repeats": 0}, "--repeats 0 is not a positive number"),
    ({"seed": -1}, "--seed -1 is not a seed"),
    ({"timeout_s": float("nan")}, "--timeout nan is not a positive number of seconds"),
    ({"stop_after_s": -5.0}, "--stop-after -5.0 is not a positive number of seconds"),
    ({"lr": 0.0}, "--lr 0.0 is not a positive finite learning rate"),
    ({"options": {"threads": 0}}, "--threads 0 is not a positive number of threads"),
    ({"backends": ()}, "--backends names no backend"),
    ({"backends": ("nope",)}, "nope"),
    ({"options": {"adapter": "gpu"}}, "--adapter is not an option of reference-fp32"),
])
def test_settings_are_checked_where_they_are_made(kw, message):
    base = {"presets": (presets.load("tiny"),), "backends": ("reference-fp32",)}
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        runner.Settings(**{**base, **kw})


def test_settings_are_immutable_and_names_given_twice_count_once(tmp_path):
    s = runner.Settings(presets=[presets.load("tiny"), presets.load("tiny")], backends=["wasm", "wasm"],
                        options={"threads": 2})
    assert s.backends == ("wasm",) and len(s.presets) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3
    with pytest.raises(TypeError):
        s.options["threads"] = 3
    assert s.options_for("wasm") == {"threads": 2} and s.at(tmp_path).out == tmp_path and s.out != tmp_path


def test_the_messages_are_typed_both_ways_and_travel():
    work = protocol.prepare(presets.load("tiny"), __import__("tinygpt_bench.corpus").corpus.synthetic(n_bytes=50_000),
                            2, 0)
    job = runner.job("reference-fp32", work, tiny(steps=2))
    assert isinstance(job, messages.Job) and job.digest == work.digest and job.options == {}
    for m in (job, messages.Described({"device": "x"}), messages.Stepped(protocol.StepTime(1, 2.0, 5.5)),
              messages.Note("n"), messages.Finished(1, 2, {"entered": 1.0}), messages.Failed("load", "e")):
        back = pickle.loads(pickle.dumps(m))
        assert type(back) is type(m)
        with pytest.raises(dataclasses.FrozenInstanceError):
            back.__setattr__(dataclasses.fields(back)[0].name, None)


def series_with(timelines: list[float]) -> runner.Series:
    return runner.Series(timelines=[{"steps": t} for t in timelines])


def test_the_schedule_interleaves_skips_kept_and_failed_and_keeps_to_the_budget():
    series = {"a": runner.Series(), "b": runner.Series(), "c": runner.Series()}
    series["c"].fail("failed", "load", "x")
    order = list(runner.Schedule("tiny", ["a", "b", "c"], 3, {"b": 2})(series))
    assert order == [(1, "a"), (2, "a"), (3, "a"), (3, "b")]  # (a's repeats interleave b's: b kept 1..2)
    both = list(runner.Schedule("tiny", ["a", "b"], 2, {})({"a": runner.Series(), "b": runner.Series()}))
    assert both == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]
    # the budget: a's longest repeat took 100 s: with the margin 125 s; 120 s are left
    sched = runner.Schedule("tiny", ["a"], 2, {"a": 1}, deadline=time.perf_counter() + 120)
    assert list(sched({"a": series_with([100.0])})) == []
    assert "tiny/a repeat 2 not started: its longest repeat took 100 s, 125 s with the margin" in sched.stopped
    sched = runner.Schedule("tiny", ["a"], 2, {"a": 1}, deadline=time.perf_counter() + 130)
    assert list(sched({"a": series_with([100.0])})) == [(2, "a")] and not sched.stopped


def test_run_curve_and_diagnose_time_steps_through_the_same_runner(tmp_path, run_cli, monkeypatch):
    """`run`, `curve` and diagnose's timed stage each measure through runner.measure (one worker
    process a repeat), so one preset on one backend gets one ms/step whichever command asked."""
    seen = []
    real = runner.measure

    def spy(job, backends, steps, timeout_s, *a, **k):
        rep = real(job, backends, steps, timeout_s, *a, **k)
        seen.append((job.backend, job.work.preset.name, steps, rep.status, len(rep.steps)))
        return rep

    monkeypatch.setattr(runner, "measure", spy)
    code, out, err = run_cli("run", "tiny", "-b", "reference-fp32", "--steps", "3", "--plain")
    assert code == 0, err
    code, _, err = run_cli("curve", "--presets", "tiny", "--backends", "reference-fp32", "--steps", "3",
                           "--repeats", "1", "--out", str(tmp_path / "c"), "--plain", "--no-chart")
    assert code == 0, err
    code, _, err = run_cli("diagnose", "tiny", "-b", "reference-fp32", "--out", str(tmp_path / "d"))
    assert code == 0, err
    assert seen == [("reference-fp32", "tiny", 3, "ok", 3), ("reference-fp32", "tiny", 3, "ok", 3),
                    ("reference-fp32", "tiny", protocol.DEFAULT_STEPS, "ok", protocol.DEFAULT_STEPS)]
