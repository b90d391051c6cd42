"""The curve protocol, result files, chart data and compare, end to end on the numpy
reference backends (fast and always available; the engines plug into the same path)."""

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tinygpt_bench import chart, compare, results, runner, stats
from tinygpt_bench.runner import repeat as repeat_mod
from conftest import as_a_terminal_starts, no_webgpu_here

BACKENDS = "reference,reference-fp32"

MEASUREMENT_HEADER = (
    "format_version,run_id,timestamp,preset,backend,status,stage,error,layers,d_model,heads,ctx,batch,params,"
    "flops_per_step,steps,repeats,seed,lr,corpus,corpus_sha256,cold_ms,median_ms,mean_ms,min_ms,q1_ms,q3_ms,"
    "max_ms,mad_ms,n_samples,n_outliers,tokens_per_s,gflop_per_s,peak_rss_bytes,engine_memory_bytes,first_loss,"
    "final_loss,"
    "loss_rel_diff_backends,loss_rel_diff_reference,reference,parity_ok,device,device_type,software_adapter,"
    "adapter_vendor,adapter_driver,adapter_api,cpu_model,threads,runtime,runtime_settings,module_sha256,"
    "kernels_sha256,git_commit,settings_id,hardware,native_peer,relaxed_simd,harness_s"
)
STEPS_HEADER = "format_version,run_id,preset,backend,repeat,step,ms,loss"


def measure_once(work, s, acc):
    """One repeat of s's backend on `work` as curve measures it, added to the series `acc`; its
    steps' rows."""
    from tinygpt_bench import curve

    rep = runner.measure(runner.job(s.backends[0], work, s), s.backends, s.steps, s.timeout_s)
    acc.add(rep)
    return curve.step_rows(work.preset.name, s.backends[0], 1, rep)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("curve")
    from tinygpt_bench import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["curve", "--presets", "tiny", "--backends", BACKENDS, "--steps", "4", "--repeats", "2",
                  "--out", str(out), "--plain", "--markdown"])
    assert e.value.code in (0, None)
    return out


def test_csv_columns_are_pinned(tiny_run):
    assert (tiny_run / "measurements.csv").read_text().splitlines()[0] == MEASUREMENT_HEADER
    assert (tiny_run / "steps.csv").read_text().splitlines()[0] == STEPS_HEADER
    assert results.MEASUREMENT_COLUMNS == MEASUREMENT_HEADER.split(",")


def test_protocol_figures(tiny_run):
    df = pd.read_csv(tiny_run / "measurements.csv")
    assert list(df.backend) == ["reference", "reference-fp32"]
    assert (df.status == "ok").all() and (df.steps == 4).all() and (df.repeats == 2).all()
    assert (df.n_samples == 6).all()  # steps 2..4 of two repeats
    assert (df.min_ms <= df.q1_ms).all() and (df.q1_ms <= df.median_ms).all() and (df.median_ms <= df.max_ms).all()
    assert (df.loss_rel_diff_backends < 1e-3).all() and df.parity_ok.all()
    assert (df.first_loss - 5.545).abs().max() < 0.05
    assert (df.peak_rss_bytes > 10 * 2**20).all()  # the worker's own resident set
    steps = pd.read_csv(tiny_run / "steps.csv")
    assert len(steps) == 2 * 2 * 4
    # each measurement's steps are committed together with its row (results.ResultWriter.commit)
    order = steps.drop_duplicates(["backend", "repeat"])[["backend", "repeat"]].values.tolist()
    assert order == [["reference", 1], ["reference", 2], ["reference-fp32", 1], ["reference-fp32", 2]]
    env = json.loads((tiny_run / "environment.json").read_text())
    assert env["format_version"] == results.FORMAT_VERSION and env["corpus"]["corpus"] == "synthetic"
    assert env["settings"]["steps"] == 4 and "cpu_model" in env["environment"]


def test_repeats_interleave_the_backends(tmp_path, run_cli):
    """Repeats run A B A B (the order the measurements start in), not A A B B."""
    code, out, _ = run_cli("curve", "--presets", "tiny", "--backends", BACKENDS, "--steps", "2", "--repeats", "2",
                           "--out", str(tmp_path / "r"), "--plain", "--no-chart")
    assert code == 0
    starts = [line.split()[0] + " " + line.split()[2] for line in out.splitlines() if " repeat " in line]
    assert starts == ["tiny/reference 1/2", "tiny/reference-fp32 1/2", "tiny/reference 2/2", "tiny/reference-fp32 2/2"]


def test_chart_is_reproduced_from_csv_and_check_catches_drift(tiny_run, tmp_path):
    data = json.loads((tiny_run / "chart-data.json").read_text())
    assert data == chart.chart_data([tiny_run])
    (pt,) = data["speedup_points"]
    assert pt["preset"] == "tiny" and pt["backend"] == "reference-fp32" and pt["low"] <= pt["speedup"] <= pt["high"]
    assert (tiny_run / "speedup.png").stat().st_size > 10_000 and (tiny_run / "speedup.svg").exists()
    assert chart.check([tiny_run], tiny_run / "chart-data.json") == []
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in ("measurements.csv", "steps.csv", "environment.json", "chart-data.json"):
        (copy / f).write_bytes((tiny_run / f).read_bytes())
    m = pd.read_csv(copy / "measurements.csv")
    m.loc[0, "median_ms"] *= 2
    m.to_csv(copy / "measurements.csv", index=False)
    assert chart.check([copy], copy / "chart-data.json") != []


def _copy_run(src, dst, factor):
    """A copy of a run's files whose step times are fixed numbers (not this machine's timing
    noise), scaled by `factor`."""
    dst.mkdir()
    (dst / "environment.json").write_bytes((src / "environment.json").read_bytes())
    s = pd.read_csv(src / "steps.csv")
    s["ms"] = (10.0 + (s["step"] % 3) * 0.1 + s["repeat"] * 0.05) * factor
    s.to_csv(dst / "steps.csv", index=False)
    m = pd.read_csv(src / "measurements.csv")
    m["median_ms"] = [s[(s.backend == b) & (s.step >= 2)].ms.median() for b in m.backend]
    m.to_csv(dst / "measurements.csv", index=False)
    return dst


def test_compare_reads_like_pyperf(tiny_run, tmp_path):
    old = _copy_run(tiny_run, tmp_path / "old", 1.0)
    same = compare.compare(old, old)
    assert all(not c.regression and "no significant change" in c.verdict for c in same)
    slow = _copy_run(tiny_run, tmp_path / "slow", 1.5)
    changes = compare.compare(old, slow)
    assert all(c.regression and c.verdict.startswith("1.50x slower") for c in changes)
    r = subprocess.run([sys.executable, "-m", "tinygpt_bench", "compare", str(old), str(slow)], capture_output=True, text=True)
    assert r.returncode == 1 and "slower" in r.stdout


def test_resume_refuses_other_settings(tiny_run, run_cli):
    code, _, err = run_cli("curve", "--presets", "tiny", "--backends", BACKENDS, "--steps", "5", "--repeats", "2",
                           "--out", str(tiny_run), "--plain", "--resume")
    assert code == 2 and "--resume refused" in err and "steps" in err
    code, _, err = run_cli("curve", "--presets", "tiny", "--backends", BACKENDS, "--out", str(tiny_run), "--plain")
    assert code == 2 and "pass --resume" in err


def test_resume_with_more_presets_keeps_both(tmp_path, run_cli):
    """A long run split over several calls (one preset set each, the same --out): the folder's
    environment.json lists every preset measured, and the earlier call's run id."""
    out = tmp_path / "split"
    common = ["--backends", "reference", "--steps", "2", "--repeats", "1", "--out", str(out), "--plain", "--no-chart"]
    assert run_cli("curve", "--presets", "tiny", *common)[0] == 0
    first = json.loads((out / "environment.json").read_text())["run_id"]
    assert run_cli("curve", "--presets", "small", *common, "--resume")[0] == 0
    env = json.loads((out / "environment.json").read_text())
    assert env["presets"] == ["tiny", "small"] and env["earlier_run_ids"] == [first]
    assert list(pd.read_csv(out / "measurements.csv").preset) == ["tiny", "small"]


def test_timeout_stops_the_step_for_real_and_run_goes_on(tmp_path, run_cli, monkeypatch):
    # every reference-fp32 step of tiny sleeps 1 s more (faults.py): 15 steps would take 15 s, past
    # the 10 s budget; small has no fault and fits it
    monkeypatch.setenv("TINYGPT_BENCH_FAULT", "reference-fp32:slow@tiny")
    code, out, _ = run_cli("curve", "--presets", "tiny,small", "--backends", "reference-fp32", "--steps", "15",
                           "--repeats", "1", "--timeout", "10", "--out", str(tmp_path), "--plain", "--no-chart")
    assert code == 1
    df = pd.read_csv(tmp_path / "measurements.csv")
    assert list(df.status) == ["timeout", "ok"]  # the next preset still ran
    assert df.stage[0].startswith("step ") and "worker stopped" in df.error[0]
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert set(steps.preset) == {"small"}  # a timed-out measurement's partial steps are not summarised
    tiny_part = out.split("== small")[0]
    assert tiny_part.count("  step ") < 15  # stopped inside the budget, not waited out


def test_failure_is_recorded_with_stage_and_next_preset_runs(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("TINYGPT_BENCH_FAULT", "reference-fp32:nan-grad@tiny")
    code, _, _ = run_cli("curve", "--presets", "tiny,small", "--backends", "reference-fp32", "--steps", "3",
                         "--repeats", "1", "--out", str(tmp_path), "--plain", "--no-chart")
    assert code == 1
    df = pd.read_csv(tmp_path / "measurements.csv")
    assert list(df.status) == ["failed", "ok"]
    assert df.stage[0] == "step 2" and "not finite" in df.error[0]


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_run_keeps_measurements_and_resume_completes(tmp_path, sig):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "tinygpt_bench", "curve", "--presets", "tiny,small,medium", "--backends",
            "reference-fp32", "--steps", "3", "--repeats", "1", "--out", str(out), "--plain", "--no-chart"]
    # medium's steps sleep 1 s each (faults.py 'slow'), so the signal lands before it ends even
    # on a loaded machine (the kill follows the first row within milliseconds)
    env = {**os.environ, "TINYGPT_BENCH_FAULT": "reference-fp32:slow@medium"}
    proc = subprocess.Popen(as_a_terminal_starts(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "measurements.csv").exists() and len(_rows(out / "measurements.csv")) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    kept = _rows(out / "measurements.csv")
    assert 1 <= len(kept) < 3, "kill should land mid-run"
    if sig == signal.SIGINT:
        assert proc.returncode == 130
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = _rows(out / "measurements.csv")
    assert [x["preset"] for x in rows] == ["tiny", "small", "medium"]
    assert rows[0] == kept[0]  # the measured row was kept, not redone
    assert "already measured" in r.stdout


def test_stats():
    assert stats.summarize([1, 2, 3, 4, 100]).outliers == 1
    assert stats.outlier_mask([5, 5, 5]).sum() == 0
    r = stats.ratio_ci([2.0, 2.1, 1.9] * 5, [1.0, 1.05, 0.95] * 5)
    assert r.low <= 2.0 <= r.high and r.significant
    fit = stats.fit_overhead_throughput([1e9, 2e9, 4e9], [3 + 1e9 / 1e7, 3 + 2e9 / 1e7, 3 + 4e9 / 1e7])
    assert abs(fit[0] - 3) < 1e-6 and abs(fit[1] - 1e7) / 1e7 < 1e-9


def test_chart_title_calls_out_a_cpu_adapter(tiny_run, tmp_path):
    for f in ("steps.csv", "environment.json"):
        (tmp_path / f).write_bytes((tiny_run / f).read_bytes())
    m = pd.read_csv(tiny_run / "measurements.csv", dtype={"device": object, "device_type": object,
                                                            "software_adapter": object})
    m.loc[1, ["device", "device_type", "software_adapter"]] = ["llvmpipe (LLVM 15.0.6, 256 bits)", "CPU", True]
    m.to_csv(tmp_path / "measurements.csv", index=False)
    title = chart.chart_data([tmp_path])["title"]
    assert "WebGPU on a CPU adapter (llvmpipe (LLVM 15.0.6, 256 bits)): not a GPU result" in title
    m.loc[1, ["device", "device_type", "software_adapter"]] = ["NVIDIA H100 80GB HBM3", "GPU", False]
    m.to_csv(tmp_path / "measurements.csv", index=False)
    assert "WebGPU on NVIDIA H100 80GB HBM3" in chart.chart_data([tmp_path])["title"]


def test_markdown_summary_comes_from_the_csv(tiny_run, run_cli):
    code, out, _ = run_cli("summary", str(tiny_run), "--markdown")
    assert code == 0
    m = pd.read_csv(tiny_run / "measurements.csv")
    assert f"{m.median_ms[0]:.2f}" in out and out.startswith("| preset | params |")


def test_nondeterministic_repeats_are_noted_and_fail_parity_only_past_tolerance():
    from tinygpt_bench import corpus as corpus_mod, curve, presets, protocol

    p = presets.load("tiny")
    corp = corpus_mod.synthetic(n_bytes=50_000)
    work = protocol.prepare(p, corp, steps=2)
    s = runner.Settings(presets=[p], backends=["reference"], steps=2, repeats=2)

    def row(second_final):
        acc = runner.Series(cold=[1.0, 1.0], steady=[1.0, 1.0], losses=[[5.5, 5.0], [5.5, second_final]])
        rc = runner.RowContext(s.steps, s.repeats, s.seed, s.lr, corp, {}, "run")
        # compared with another backend's final loss and the float64 reference's, both 5.0
        return runner.row("reference", p, acc, rc, {"reference": 5.0, "other": 5.0}, [5.5, 5.0])

    near = row(5.0 + 5e-7)
    assert near.parity_ok is True and near.loss_rel_diff_reference == 0.0
    assert "differ between repeats" in near.error
    far = row(5.1)
    assert far.parity_ok is False and "differ between repeats" in far.error
    same = row(5.0)
    assert same.parity_ok is True and not same.error


def test_wasm_engine_options_reach_the_rows(tmp_path, run_cli):
    """--no-wasm-fma and --spectre-guards go to the wasm engine, show in its runtime_settings and
    are part of the run's settings (a resume with other engine options is refused)."""
    out = tmp_path / "opts"
    common = ["--presets", "tiny", "--backends", "wasm", "--steps", "2", "--repeats", "1", "--threads", "1",
              "--out", str(out), "--plain", "--no-chart"]
    assert run_cli("curve", *common, "--no-wasm-fma", "--spectre-guards")[0] == 0
    row = pd.read_csv(out / "measurements.csv").iloc[0]
    assert "relaxed_simd=off" in row.runtime_settings and "spectre_guards=on" in row.runtime_settings
    env = json.loads((out / "environment.json").read_text())
    assert env["settings"]["wasm_fma"] is False and env["settings"]["spectre_guards"] is True
    code, _, err = run_cli("curve", *common, "--resume")
    assert code == 2 and "--resume refused" in err


@pytest.mark.parametrize("rows_before,delay", [(0, 0.3), (1, 0.5), (1, 2.0), (2, 1.0)])
def test_sigkill_at_any_point_then_resume_keeps_exactly_the_finished_steps(tmp_path, rows_before, delay):
    """SIGKILL lands inside a measurement (before the first row, early or late in a slow one),
    then --resume: steps.csv holds exactly the steps of the measurements in measurements.csv
    (repeats x steps each, same run id), nothing of the killed one, and the statistics the
    readers give (summary's median) are those recomputed from the file's steps alone."""
    import numpy as np

    from tinygpt_bench import report, results

    out = tmp_path / "run"
    args = [sys.executable, "-m", "tinygpt_bench", "curve", "--presets", "tiny,small", "--backends",
            "reference-fp32,reference", "--steps", "2", "--repeats", "2", "--out", str(out), "--plain", "--no-chart"]
    env = {**os.environ, "TINYGPT_BENCH_FAULT": "reference-fp32:slow@small,reference:slow@tiny"}  # 1 s a step
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        m = out / "measurements.csv"
        if rows_before == 0 and (out / "environment.json").exists() or m.exists() and len(_rows(m)) >= rows_before:
            break
        time.sleep(0.02)
    time.sleep(delay)
    proc.kill()
    proc.wait(timeout=60)
    killed_rows = len(_rows(out / "measurements.csv")) if (out / "measurements.csv").exists() else 0
    assert killed_rows < 4, "the kill should land before the run ends"
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    rows = _rows(out / "measurements.csv")
    assert sorted((x["preset"], x["backend"]) for x in rows) == sorted(
        (p, b) for p in ("tiny", "small") for b in ("reference-fp32", "reference"))
    steps = _rows(out / "steps.csv")
    for x in rows:  # each measurement's steps: exactly repeats x steps, of its own run
        mine = [s for s in steps if (s["preset"], s["backend"]) == (x["preset"], x["backend"])]
        assert len(mine) == 2 * 2 and {s["run_id"] for s in mine} == {x["run_id"]}, (x["preset"], x["backend"])
        want = float(np.median([float(s["ms"]) for s in mine if int(s["step"]) >= 2]))
        assert float(x["median_ms"]) == pytest.approx(want, rel=1e-6)  # the CSV keeps 7 digits
    assert len(steps) == len(rows) * 2 * 2  # nothing of the killed measurement is left
    df = results.read_measurements([out])
    summary = report.summary_rows(df, results.read_steps([out]))
    assert summary  # the readers accept the resumed folder and summarise it


def test_a_failing_reference_oracle_leaves_parity_unknown_and_the_run_goes_on(tmp_path, run_cli, monkeypatch):
    """The float64 reference fails on tiny (an injected NaN): tiny's measurement is kept with
    parity against float64 unknown and the oracle's stage named, small is measured and checked
    as usual, and the run ends with exit 1, not 2."""
    monkeypatch.setenv("TINYGPT_BENCH_FAULT", "reference:nan-grad@tiny")
    code, out, err = run_cli("curve", "--presets", "tiny,small", "--backends", "reference-fp32", "--steps", "3",
                             "--repeats", "1", "--out", str(tmp_path), "--plain", "--no-chart")
    assert code == 1, err
    df = pd.read_csv(tmp_path / "measurements.csv")
    assert list(df.preset) == ["tiny", "small"] and list(df.status) == ["ok", "ok"]
    assert df.reference[0].startswith("failed: the float64 reference failed at stage 'step ")
    assert pd.isna(df.loss_rel_diff_reference[0])
    assert df.reference[1] == "reference (numpy float64)" and df.loss_rel_diff_reference[1] < 1e-6
    assert "parity against float64 is unknown" in out


def test_what_cannot_fit_is_refused_at_preflight_by_run_and_curve(tmp_path, run_cli, monkeypatch):
    """diagnose's preflight before anything starts: a WebGPU adapter whose limits (capped by an
    injected fault) cannot hold tiny's buffers. `run` refuses in one line (exit 2); `curve`
    records the measurement as failed at stage preflight, starts no worker for it, and measures
    the next backend."""
    pytest.importorskip("wgpu")
    monkeypatch.setenv("TINYGPT_BENCH_FAULT", "webgpu:limit=64KiB@tiny")
    code, out, err = run_cli("run", "tiny", "--backend", "webgpu", "--steps", "2", "--plain")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if "no WebGPU adapter" in err:
        no_webgpu_here("wgpu-native", err.strip())
    assert code == 2 and len(lines) == 1 and "cannot run preset 'tiny' here" in lines[0], err
    assert "capped by fault" in lines[0] and "Traceback" not in err + out
    code, out, err = run_cli("curve", "--presets", "tiny", "--backends", "webgpu,reference-fp32", "--steps", "2",
                             "--repeats", "1", "--out", str(tmp_path), "--plain", "--no-chart")
    assert code == 1, err
    df = pd.read_csv(tmp_path / "measurements.csv")
    assert list(df.status) == ["failed", "ok"] and df.stage[0] == "preflight"
    assert "webgpu buffer" in df.error[0] and "nothing was allocated" in df.error[0]
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert set(steps.backend) == {"reference-fp32"}


def test_harness_time_is_measured_and_reported(tiny_run, tmp_path, run_cli):
    """Each row carries its harness time: the worker's wall time beyond its timed steps, a measured
    positive number of seconds (no limit asserted: the machine's load sets it); curve says it."""
    df = pd.read_csv(tiny_run / "measurements.csv")
    assert df.harness_s.notna().all() and (df.harness_s > 0).all()
    steps = pd.read_csv(tiny_run / "steps.csv")
    assert (df.harness_s < 3600).all() and steps.ms.sum() > 0  # seconds, not milliseconds
    code, out, _ = run_cli("curve", "--presets", "tiny", "--backends", "reference", "--steps", "2", "--repeats", "2",
                           "--out", str(tmp_path / "h"), "--plain", "--no-chart")
    assert code == 0
    assert "harness time: " in out and "s per measurement beyond its steps (median of 2" in out
    assert " s/measurement" in out.split("tiny/reference: ")[1]  # the row's own line (wrapped at 120)


def test_harness_timeline_adds_up_to_the_wall_time():
    from tinygpt_bench import curve, protocol

    marks = {"entered": 10.5, "work": 10.6, "imported": 10.7, "created": 10.8, "described": 11.0, "loaded": 12.0,
             "trained": 12.9, "done": 12.95}
    steps = [protocol.StepTime(1, 500.0, 5.5), protocol.StepTime(2, 300.0, 5.4)]
    tl = runner.harness_timeline(10.0, marks, 3.25, steps)
    assert tl["entered"] == pytest.approx(0.5) and tl["loaded"] == pytest.approx(1.0)
    assert tl["steps"] == pytest.approx(0.8) and tl["trained"] == pytest.approx(0.1) and tl["end"] == pytest.approx(0.3)
    assert sum(tl.values()) == pytest.approx(3.25)


def test_the_worker_trains_the_work_it_was_handed_bit_for_bit(tmp_path):
    """The parent's work goes to the worker as it is (its sha256 checked there): the worker's
    losses equal an in-process run of the same work bit for bit, and a worker handed work whose
    digest is not the parent's refuses it."""
    from tinygpt_bench import corpus, curve, presets, protocol

    p = presets.load("tiny")
    work = protocol.prepare(p, corpus.load("synthetic"), 3, 0)
    s = runner.Settings(presets=[p], backends=["reference-fp32"], steps=3, repeats=1, out=tmp_path)
    acc = runner.Series()
    rows = measure_once(work, s, acc)
    be = protocol.create_backend("reference-fp32", p)
    try:
        here = [st.loss for st in protocol.train(be, work, s.lr)]
    finally:
        be.close()
    assert acc.status == "ok" and [r["loss"] for r in rows] == here
    assert len(acc.harness) == 1 and acc.harness[0] > 0 and set(acc.timelines[0]) >= {"entered", "loaded", "end"}
    work.__dict__["digest"] = "0" * 64  # what the worker is told the parent's work hashes to
    bad = runner.Series()
    assert measure_once(work, s, bad) == []
    assert bad.status == "failed" and "work sha256 differs" in bad.error


def test_the_weights_are_handed_over_in_a_file_that_the_worker_maps_read_only(tmp_path):
    """handed_over writes the weights once; the worker maps them read-only and trains the same
    bits as from the work itself; the file is gone after the block. A file changed after the parent
    hashed it, or other batches, is refused in the worker; where no file can be written the work
    goes whole (pickled)."""
    import numpy as np

    from tinygpt_bench import corpus, curve, presets, protocol, scratch

    p = presets.load("tiny")
    work = protocol.prepare(p, corpus.load("synthetic"), 3, 0)
    assert not work.params.flags.writeable and not work.batches[0].flags.writeable
    s = runner.Settings(presets=[p], backends=["reference-fp32"], steps=3, repeats=1, out=tmp_path)
    direct = runner.Series()
    measure_once(work, s, direct)
    with protocol.handed_over(work) as handed:
        assert isinstance(handed, protocol.HandedWork) and os.path.basename(handed.path).startswith(
            f"{protocol.WORK_PREFIX}{os.getpid()}-")
        opened = protocol.receive(handed, work.digest)
        assert np.array_equal(opened.params, work.params) and not opened.params.flags.writeable
        assert protocol.work_digest(opened) == work.digest
        acc = runner.Series()
        measure_once(handed, s, acc)
        assert acc.status == "ok" and acc.losses == direct.losses
        other = protocol.HandedWork(**{**handed.__dict__, "batches": [b + 1 for b in handed.batches]})
        with pytest.raises(RuntimeError, match="other batches"):
            protocol.receive(other, work.digest)
        with open(handed.path, "r+b") as f:  # the weights changed after they were hashed
            f.write(b"\0\0\0\0")
        os.utime(handed.path, ns=(1, 1))
        bad = runner.Series()
        assert measure_once(handed, s, bad) == []
        assert bad.status == "failed" and "changed after the parent wrote and hashed it" in bad.error
        path = handed.path
    assert not os.path.exists(path)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    import unittest.mock

    with unittest.mock.patch.object(scratch, "create", full):
        with protocol.handed_over(work) as handed:
            assert handed is work


def test_weights_files_of_dead_runs_are_removed_by_the_next_handover(tmp_path, monkeypatch):
    import subprocess

    from tinygpt_bench import corpus, presets, protocol, scratch

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"{protocol.WORK_PREFIX}{gone.pid}-x.f32"
    dead.write_bytes(b"1234")
    monkeypatch.setattr(scratch, "folder", lambda: str(tmp_path))
    work = protocol.prepare(presets.load("tiny"), corpus.load("synthetic"), 1, 0)
    with protocol.handed_over(work) as handed:
        assert os.path.dirname(handed.path) == str(tmp_path)
    assert not dead.exists() and list(tmp_path.iterdir()) == []


def test_a_run_killed_between_repeats_keeps_them_for_resume(tmp_path):
    """A measurement's finished repeats are kept in the folder until its row is written: a run
    stopped in its third repeat, resumed, measures only that repeat, and the row and steps are
    those of all three (the kept steps stamped with the run that commits them); a new run in
    another folder starts clean, and kept repeats of other settings are not taken up."""
    from tinygpt_bench import curve, presets, results

    class Stop(Exception):
        pass

    class Recorder(curve.Reporter):
        def __init__(self, stop: bool):
            self.stop, self.started, self.notes = stop, [], []

        def note(self, text):
            self.notes.append(text)

        def measurement_start(self, preset, backend, repeat, repeats, steps):
            self.started.append((backend, repeat))
            if self.stop and repeat == 3 and backend == "reference-fp32":
                raise Stop()  # as a kill in the third repeat would

    out = tmp_path / "run"
    s = runner.Settings(presets=[presets.load("tiny")], backends=["reference", "reference-fp32"], steps=2,
                            repeats=3, out=out)
    with pytest.raises(Stop):
        curve.run(s, Recorder(stop=True))
    kept = sorted(p.name for p in (out / results.IN_PROGRESS).iterdir())
    assert kept == ["tiny__reference-fp32.json", "tiny__reference.json"]
    assert not results.measurements([out], require_rows=False)  # no row yet

    again = Recorder(stop=False)
    s2 = runner.Settings(presets=[presets.load("tiny")], backends=["reference", "reference-fp32"], steps=2,
                             repeats=3, out=out, resume=True)
    rows = curve.run(s2, again)
    assert again.started == [("reference-fp32", 3)]  # reference had all 3 kept, fp32 its first 2
    assert "tiny/reference-fp32: 2 of 3 repeats kept from an interrupted run, measuring the rest" in again.notes
    run_note = next(n for n in again.notes if n.startswith("harness time:"))
    assert "(median of 1," in run_note  # the run's own figure counts this call's one repeat
    assert [r.status for r in rows] == ["ok", "ok"] and not (out / results.IN_PROGRESS).exists()
    steps = results.read_steps([out])
    for b in ("reference", "reference-fp32"):
        mine = steps[steps.backend == b]
        assert sorted(zip(mine.repeat, mine.step)) == [(r, i) for r in (1, 2, 3) for i in (1, 2)]
        assert set(mine.run_id) == {rows[0].run_id}
    m = {r.backend: r for r in rows}
    assert m["reference"].n_samples == 3 and m["reference-fp32"].n_samples == 3  # steps 2..N of 3 repeats

    # kept repeats of other settings or another work are dropped, not mixed in
    other = tmp_path / "other"
    with pytest.raises(Stop):
        curve.run(runner.Settings(presets=[presets.load("tiny")], backends=["reference-fp32"], steps=2, repeats=3,
                                      out=other), Recorder(stop=True))
    env = json.loads((other / "environment.json").read_text())
    w = results.ResultWriter(other, env, resume=True)
    try:
        state = w.load_repeats("tiny", "reference-fp32", env["settings_id"], "another work")
        assert state is None and not (other / results.IN_PROGRESS).exists()
    finally:
        w.close()


def test_stop_after_starts_no_repeat_that_would_end_past_it(tmp_path, monkeypatch, run_cli):
    """--stop-after: a repeat whose backend's longest repeat, plus 25%, would take longer than the
    budget has left is not started; the finished repeats are kept, nothing is committed half, exit 3 says so, and
    --resume measures the rest. A budget already spent starts nothing."""
    from tinygpt_bench import curve, presets, results

    real = repeat_mod.harness_timeline
    monkeypatch.setattr(repeat_mod, "harness_timeline", lambda *a: {**real(*a), "end": 1000.0})  # a 1000 s repeat
    out = tmp_path / "run"
    s = runner.Settings(presets=[presets.load("tiny")], backends=["reference-fp32"], steps=2, repeats=3, out=out,
                            stop_after_s=600.0)
    with pytest.raises(curve.Stopped, match="tiny/reference-fp32 repeat 2 not started: its longest repeat took 100") as e:
        curve.run(s, runner.Reporter())
    assert e.value.rows == [] and not results.done_keys(out)
    kept = json.loads((out / results.IN_PROGRESS / "tiny__reference-fp32.json").read_text())
    assert kept["repeats"] == 1
    monkeypatch.setattr(repeat_mod, "harness_timeline", real)
    # resumed: the kept repeat's 1000 s count, with the margin: 1250 s do not fit in 1100
    with pytest.raises(curve.Stopped, match="repeat 2 not started: its longest repeat took 100[0-9] s, 125[0-9] s"):
        curve.run(dataclasses.replace(s, resume=True, stop_after_s=1100.0), runner.Reporter())
    rows = curve.run(runner.Settings(presets=[presets.load("tiny")], backends=["reference-fp32"], steps=2,
                                         repeats=3, out=out, resume=True), runner.Reporter())
    assert [r.status for r in rows] == ["ok"] and rows[0].n_samples == 3

    common = ["--presets", "tiny", "--backends", "reference-fp32", "--steps", "2", "--repeats", "2", "--plain",
              "--no-chart"]
    code, out_text, _ = run_cli("curve", *common, "--out", str(tmp_path / "cli"), "--stop-after", "1e-9")
    assert code == 3 and "repeat 1 not started" in out_text and "carry on with --resume" in out_text
    code, _, err = run_cli("curve", *common, "--out", str(tmp_path / "bad"), "--stop-after", "-5")
    assert code == 2 and "--stop-after -5" in err and "Traceback" not in err


def test_stop_after_leaves_a_margin_over_the_longest_repeat(tmp_path, monkeypatch):
    """A repeat is started only where its backend's longest repeat, 25% longer, fits: the next
    repeat of a measurement on shared cores can take that much longer than the last one."""
    from tinygpt_bench import curve, presets

    real = repeat_mod.harness_timeline
    monkeypatch.setattr(repeat_mod, "harness_timeline", lambda *a: {**real(*a), "end": 500.0})  # a 500 s repeat
    s = runner.Settings(presets=[presets.load("tiny")], backends=["reference-fp32"], steps=2, repeats=2,
                            out=tmp_path / "a", stop_after_s=600.0)  # 500 s fit in 600, 625 do not
    with pytest.raises(curve.Stopped, match="repeat 2 not started"):
        curve.run(s, runner.Reporter())
    rows = curve.run(dataclasses.replace(s, out=tmp_path / "b", stop_after_s=700.0), runner.Reporter())
    assert [r.status for r in rows] == ["ok"] and rows[0].n_samples == 2
    assert runner.Series().repeat_estimate() == 0.0


def test_a_folder_from_before_harness_s_reads_and_resumes(tmp_path, run_cli):
    """measurements.csv written before harness_s existed: read with the column unknown, and
    --resume rewrites its header so the rows it adds line up."""
    out = tmp_path / "old"
    common = ["--backends", "reference", "--steps", "2", "--repeats", "1", "--out", str(out), "--plain", "--no-chart"]
    assert run_cli("curve", "--presets", "tiny", *common)[0] == 0
    rows = _rows(out / "measurements.csv")
    columns = [c for c in rows[0] if c != "harness_s"]
    with open(out / "measurements.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    df = results.read_measurements([out])
    assert list(df.preset) == ["tiny"] and math.isnan(df.harness_s[0])  # unknown
    assert run_cli("curve", "--presets", "small", *common, "--resume")[0] == 0
    assert (out / "measurements.csv").read_text().splitlines()[0] == MEASUREMENT_HEADER
    df = results.read_measurements([out])
    assert list(df.preset) == ["tiny", "small"] and math.isnan(df.harness_s[0]) and df.harness_s[1] > 0


def test_resume_refuses_a_file_with_columns_this_version_does_not_know(tmp_path, run_cli):
    """A measurements.csv whose header has a column unknown here (a later tinygpt-bench wrote
    it): --resume stops in one line, exit 2, and leaves the file as it was (rows appended under
    that header would not line up)."""
    out = tmp_path / "later"
    common = ["--backends", "reference", "--steps", "2", "--repeats", "1", "--out", str(out), "--plain", "--no-chart"]
    assert run_cli("curve", "--presets", "tiny", *common)[0] == 0
    path = out / "measurements.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",from_the_future", *(r + "," for r in lines[1:])]) + "\n")
    before = path.read_bytes()
    rc, _, err = run_cli("curve", "--presets", "small", *common, "--resume")
    assert rc == 2 and "from_the_future" in err and "Traceback" not in err
    assert path.read_bytes() == before


def test_resume_takes_a_folder_whose_unmeasured_engines_artifacts_changed(tmp_path, run_cli):
    """A folder's runs recorded every engine's artifact digests; a kernel edited since then
    (here: the recorded kernels_sha256 made different) does not stop a resumed call that
    measures no WebGPU backend: the folder keeps the digest its earlier rows were measured with.
    A call that measures a WebGPU backend, which runs the kernels, is still refused."""
    out = tmp_path / "parts"
    common = ["--steps", "2", "--repeats", "1", "--out", str(out), "--plain", "--no-chart"]
    assert run_cli("curve", "--presets", "tiny", "--backends", "reference", *common)[0] == 0
    env_path = out / "environment.json"
    env = json.loads(env_path.read_text())
    env["settings"]["kernels_sha256"] = "0" * 64  # as measured with other kernels than today's
    env["settings_id"] = results.settings_id(env["settings"])
    env_path.write_text(json.dumps(env))
    rc, _, err = run_cli("curve", "--presets", "small", "--backends", "reference", *common, "--resume")
    assert rc == 0, err
    env2 = json.loads(env_path.read_text())
    assert env2["settings"]["kernels_sha256"] == "0" * 64 and env2["settings_id"] == env["settings_id"]
    assert [r["settings_id"] for r in _rows(out / "measurements.csv") if r["preset"] == "small"] == [env["settings_id"]]
    rc, _, err = run_cli("curve", "--presets", "tiny", "--backends", "webgpu", *common, "--resume")
    assert rc == 2 and "kernels_sha256" in err


def test_resume_refuses_a_folder_measured_on_another_gpu_machine(tmp_path, run_cli):
    """Two lent machines whose CPUs report the same model name, core count and host name (the
    H200 and H100 machines) are told apart by the GPUs they saw: --resume of a folder measured
    beside other GPUs stops in one line naming them, exit 2, the folder's files unchanged (session 9
    took up an H200 machine's kept repeats on an H100 machine). A folder written before the GPUs
    joined the settings resumes where its recorded adapters are this machine's, and keeps its
    settings as written, so its kept repeats are still taken up."""
    out = tmp_path / "parts"
    common = ["--backends", "reference", "--steps", "2", "--repeats", "1", "--out", str(out), "--plain", "--no-chart"]
    assert run_cli("curve", "--presets", "tiny", *common)[0] == 0
    env_path = out / "environment.json"
    env = json.loads(env_path.read_text())
    here = env["settings"]["gpus"]
    assert isinstance(here, list)

    def written(settings: dict, adapters: list) -> None:
        e = {**env, "settings": settings, "settings_id": results.settings_id(settings),
             "environment": {**env["environment"], "adapters": adapters}}
        env_path.write_text(json.dumps(e))

    h200 = [{"implementation": "wgpu-native", "name": "NVIDIA H200", "software": False}]
    written({**env["settings"], "gpus": ["NVIDIA H200"]}, h200)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    rc, _, err = run_cli("curve", "--presets", "small", *common, "--resume")
    assert rc == 2 and "--resume refused" in err and "NVIDIA H200" in err and "gpus" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    old = {k: v for k, v in env["settings"].items() if k != "gpus"}  # from before the key
    written(old, h200)
    rc, _, err = run_cli("curve", "--presets", "small", *common, "--resume")
    assert rc == 2 and "NVIDIA H200" in err

    written(old, env["environment"].get("adapters", []))  # this machine's adapters then
    rc, _, err = run_cli("curve", "--presets", "small", *common, "--resume")
    assert rc == 0, err
    env2 = json.loads(env_path.read_text())
    assert env2["settings"] == old and env2["settings_id"] == results.settings_id(old)
    assert [r["settings_id"] for r in _rows(out / "measurements.csv") if r["preset"] == "small"] == [env2["settings_id"]]
