"""Where a run writes without --out (issue 27): a folder of its own under runs/, never the
committed results/, with runs/latest pointing at the newest; curve --resume takes that one up."""

from __future__ import annotations

import os

from tinygpt_bench import runs


def test_curve_without_out_writes_a_new_run_folder_and_points_latest_at_it(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    args = ("curve", "--presets", "tiny", "--backends", "reference", "--repeats", "1", "--steps", "2", "--plain",
            "--no-chart")
    code, out, _ = run_cli(*args)
    assert code == 0, out
    first = runs.latest()
    assert first.parent == tmp_path / "runs" or first.parent == runs.BASE
    assert (tmp_path / first / "measurements.csv").is_file() and not (tmp_path / "results").exists()
    assert os.path.islink(tmp_path / "runs" / "latest")
    code, out, _ = run_cli(*args)  # a second run: a second folder, latest moves to it
    assert code == 0, out
    assert runs.latest() != first and len([p for p in (tmp_path / "runs").iterdir() if not p.is_symlink()]) == 2


def test_resume_without_out_takes_up_the_latest_run(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    base = ("curve", "--backends", "reference", "--repeats", "1", "--steps", "2", "--plain", "--no-chart")
    assert run_cli(*base, "--presets", "tiny")[0] == 0
    code, out, _ = run_cli(*base, "--presets", "tiny,small", "--resume")
    assert code == 0, out
    assert "tiny: already measured" in out and str(runs.latest()) in out


def test_resume_without_any_run_is_one_line(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("curve", "--presets", "tiny", "--backends", "reference", "--resume", "--plain")
    msg = (out + err).strip()
    assert code == 2 and "there is none; give the folder to resume with --out" in msg and "Traceback" not in msg


def test_diagnose_without_out_writes_its_own_folder(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    curve = ("curve", "--presets", "tiny", "--backends", "reference", "--repeats", "1", "--steps", "2", "--plain",
             "--no-chart")
    assert run_cli(*curve)[0] == 0
    before = runs.latest()
    code, out, _ = run_cli("diagnose", "tiny", "--backend", "reference")
    assert code == 0, out
    folders = sorted((tmp_path / "runs").glob("*-diagnose"))
    assert len(folders) == 1 and (folders[0] / "diagnose-tiny-reference.md").is_file()
    assert runs.latest() == before  # a diagnose is not what `curve --resume` takes up


def test_the_default_set_is_the_quick_one_on_a_software_adapter_and_full_on_request(monkeypatch):
    from tinygpt_bench import curve

    monkeypatch.setattr(curve, "_webgpu_adapter_kind", lambda: "CPU")
    presets, backends, why = curve.default_selection(full=False)
    assert presets == curve.QUICK_PRESETS and len(presets) >= 3
    assert "webgpu-dawn" in backends and "wasm" in backends and "software adapter" in why  # both engines
    assert curve.default_selection(full=True)[:2] == (curve.DEFAULT_PRESETS, curve.DEFAULT_BACKENDS)
    monkeypatch.setattr(curve, "_webgpu_adapter_kind", lambda: "GPU")
    assert curve.default_selection(full=False)[:2] == (curve.DEFAULT_PRESETS, curve.DEFAULT_BACKENDS)


def test_eta_from_the_flop_model_and_finished_repeats(tmp_path):
    """Two presets of one backend fit overhead + FLOPs / throughput: the third is predicted from
    it; a backend with no repeat yet leaves the time unknown; the next run starts from the cache."""
    from tinygpt_bench import eta

    e = eta.Eta(steps=10, machine_key="m", cache_dir=str(tmp_path))
    e.schedule([("a", 1e9, "x", 1), ("b", 2e9, "x", 1), ("c", 4e9, "x", 2), ("a", 1e9, "y", 1)])
    assert e.total == 5 and e.left_s() is None
    e.repeat_done("a", "x", wall_s=1.0 + 10 * 0.020, step_ms=[20.0] * 10)  # 10 ms + 1 GFLOP at 100 GFLOP/s
    e.repeat_done("b", "x", wall_s=1.0 + 10 * 0.030, step_ms=[30.0] * 10)
    assert e.left_s() is None  # y has no repeat yet
    e.repeat_done("a", "y", wall_s=2.0, step_ms=[100.0] * 10)
    assert abs(e.left_s() - 2 * (1.0 + 10 * 0.050)) < 1e-6  # c: 10 + 40 = 50 ms a step, twice
    e.save()
    again = eta.Eta(steps=10, machine_key="m", cache_dir=str(tmp_path))
    again.schedule([("c", 4e9, "x", 1)])
    assert abs(again.left_s() - (1.0 + 10 * 0.050)) < 1e-6  # the up-front estimate


def test_busy_machine_is_named():
    from tinygpt_bench import eta

    assert eta.busy_warning({"cores": 2, "loadavg_1m": 0.3}, before_run=True) is None
    assert "load average 3.00 on 2 cores" in eta.busy_warning({"cores": 2, "loadavg_1m": 3.0}, before_run=True)
    assert "stolen by the hypervisor" in eta.busy_warning({"cores": 2, "steal_share": 0.2}, before_run=False)


def test_a_first_run_gets_its_up_front_estimate_from_a_committed_run_of_its_size():
    """No cache: the models come from the checkout's results/ folders measured on a machine with
    as many cores and the same kind of adapter; a machine of another size gets none."""
    from pathlib import Path

    from tinygpt_bench import eta

    folders = [p for p in (Path(__file__).resolve().parents[1] / "results").iterdir()
               if (p / "measurements.csv").is_file()]
    priors = eta.reference_priors(folders, cores=2, gpu=False)
    assert {"wasm", "webgpu-dawn", "wasm-chrome"} <= set(priors)
    assert all(p["flop_per_ms"] > 0 and "committed run" in p["source"] for p in priors.values())
    e = eta.Eta(steps=15)
    e.schedule([("tiny", 2.2e8, "wasm", 3), ("small", 2.3e9, "webgpu-dawn", 3)], priors)
    assert e.left_s() is not None and e.left_s() > 0 and e.prior_sources
    assert eta.reference_priors(folders, cores=3, gpu=False) == {}
