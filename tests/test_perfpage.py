"""`tinygpt-bench report`: the performance page rendered from a results folder alone, here
a synthetic one written with the package's own writers (curve's CSVs, peak's CSV, a
diagnose report) whose figures are known, and the committed CPU run."""

import re
from pathlib import Path

import numpy as np
import pytest

from tinygpt_bench import diagnose, engines, model, peak, perfpage, presets, results, stats

ROOT = Path(__file__).resolve().parents[1]

# (preset, backend) -> median ms a step; the ratios to the native peer: webgpu xl 10/25 = 0.4,
# behemoth 200/130 = 1.54, wasm xl 300/100 = 3.0
MS = {("xl", "webgpu"): 10.0, ("xl", "wasm"): 300.0, ("xl", "torch-cuda"): 25.0, ("xl", "torch-cpu"): 100.0,
      ("behemoth", "webgpu"): 200.0, ("behemoth", "wasm"): 9000.0, ("behemoth", "torch-cuda"): 130.0,
      ("behemoth", "torch-cpu"): 3000.0}
LOSS = {"webgpu": 3.1, "wasm": 3.1000001, "torch-cuda": 3.1000002, "torch-cpu": 3.1000004}
DEVICE = {"webgpu": "NVIDIA H100", "torch-cuda": "NVIDIA H100", "wasm": "Xeon", "torch-cpu": "Xeon"}


def write_synthetic(folder: Path) -> Path:
    env = {"format_version": results.FORMAT_VERSION, "run_id": "synthetic-1",
           "settings": {"steps": 15, "repeats": 2, "seed": 0, "corpus_sha256": "ab" * 32},
           "settings_id": "synthetic", "environment": {"cpu_model": "Xeon", "cpu_usable_cores": 16,
                                                       "cpu_logical_cores": 16, "hostname": "gpu-host",
                                                       "python": "3.12", "git_commit": "c0ffee"}}
    w = results.ResultWriter(folder, env, resume=False)
    rng = np.random.default_rng(0)
    for name in ("xl", "behemoth"):
        p = presets.load(name)
        flops = model.flops_per_step(p)["total"]
        for b in ("webgpu", "wasm", "torch-cuda", "torch-cpu"):
            ms = MS[(name, b)] * (1 + 0.01 * rng.standard_normal(28))
            steps = [results.Step(run_id="synthetic-1", preset=name, backend=b, repeat=r, step=s,
                                  ms=float(ms[(r - 1) * 14 + s - 2]) if s > 1 else 1000.0, loss=LOSS[b])
                     for r in (1, 2) for s in range(1, 16)]
            w.steps(steps)
            sm = stats.summarize(ms)
            others = [v for k, v in LOSS.items() if k != b]
            w.measurement(results.Measurement(
                run_id="synthetic-1", preset=name, backend=b, status="ok", params=model.param_count(p),
                flops_per_step=flops, d_model=p.d_model, steps=15, repeats=2, median_ms=sm.median,
                q1_ms=sm.q1, q3_ms=sm.q3, n_samples=sm.n, gflop_per_s=flops / sm.median / 1e6,
                final_loss=LOSS[b], loss_rel_diff_backends=max(stats.rel_diff(LOSS[b], o) for o in others),
                parity_ok=True, device=DEVICE[b], threads=16 if b in ("wasm", "torch-cpu") else None,
                cpu_model="Xeon", hardware=engines.info(b).hardware, native_peer=engines.info(b).native_peer,
                relaxed_simd=False if b == "wasm" else None))
    w.close()
    pw = peak.PeakWriter(folder)
    machine = {"cpu_model": "Xeon", "hostname": "gpu-host", "git_commit": "c0ffee"}
    for engine, kind, what, threads, gflops in (
            ("wasm", "peak", "simd128_mul_add", 1, 30.0), ("wasm", "peak", "simd128_mul_add", 16, 400.0),
            ("wasm", "matmul", "matmul simd128", 16, 200.0), ("webgpu", "peak", "fp32_fma", None, 50000.0),
            ("webgpu", "matmul", "matmul", None, 16000.0), ("torch-cpu", "matmul", "matmul", 16, 1500.0),
            ("torch-cuda", "matmul", "matmul", None, 40000.0)):
        device = "NVIDIA H100" if engine in ("webgpu", "torch-cuda") else "Xeon"
        pw.row({"engine": engine, "kind": kind, "what": what, "threads": threads, "size": "4096x4096x4096",
                "device": device, "relaxed_simd": False if engine == "wasm" else None,
                "flops": 2 * 4096 ** 3, "seconds": 2 * 4096 ** 3 / gflops / 1e9, "gflop_per_s": gflops,
                "max_rel_err": 1e-6, "status": "ok", **machine})
    pw.close()
    d = diagnose.Diagnosis("xl", "webgpu", {})
    d.stages = [diagnose.Stage("timed", True, "median 10.10 ms/step over 3 steps"),
                diagnose.Stage("kernels", True, "3 kernels", detail={"kernels": {
                    "matmul_shared fwd": 4.0, "attention_forward": 3.0, "adamw": 1.0}})]
    diagnose.write_report(d, folder)
    return folder


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("h100") / "h100")


def _row(block: str, start: str) -> str:
    return next(line for line in block.splitlines() if line.startswith(start))


def test_no_internal_sections(synthetic):
    """The page says what its files say: no section of the project's own targets (issue 7's
    'Targets', mostly 'not measured' rows to a user); the ratios they read stay in the peer table."""
    block = perfpage.generated_block(synthetic)
    assert "Target" not in block and "issue 7" not in block and "not measured" not in block
    assert re.search(r"\| xl \| 0\.40 \[[^|]*\] \| 3\.0\d \[", block)  # webgpu / torch-cuda, wasm / torch-cpu
    assert "| behemoth | 1.54 [" in block


def test_page_sections_read_from_the_files(synthetic):
    block = perfpage.generated_block(synthetic)
    for heading in ("## Machine", "## Step time", "## The speedup curve", "## Ratio to the native peer",
                    "## Achieved GFLOP/s against the measured peaks",
                    "## Where the time goes", "## Loss parity"):
        assert heading in block
    assert block.startswith(f"<!-- generated:start source={synthetic} -->")
    assert block.rstrip().endswith(perfpage.GENERATED_END)
    # ratio with its interval, per preset
    assert _row(block, "| xl | 0.40 [").count("[") == 2
    # GFLOP/s against the measured peaks: wasm xl against the 16-thread SIMD128 peak, webgpu its FMA peak
    df = results.read_measurements([synthetic])
    achieved = df[(df.preset == "xl") & (df.backend == "wasm")].gflop_per_s.iloc[0]
    wasm_xl = _row(block, "| xl | wasm |")
    assert f"{100 * achieved / 400.0:.1f}% of 400 (wasm simd128_mul_add 16t)" in wasm_xl
    assert "fp32_fma" in _row(block, "| xl | webgpu |") and "fp32_fma" in _row(block, "| xl | torch-cuda |")
    # the per-kernel table of the diagnose report, with shares
    assert "### xl on webgpu" in block and "| matmul_shared fwd | 4.000 | 50.0% |" in block
    assert re.search(r"Timed: median 10\.10 ms/step over 3 steps\. In the curve: \d+\.\d\d ms/step", block)
    # machine: the GPU, thread counts
    assert "- webgpu: NVIDIA H100" in block and "wasm: Xeon (threads 16)" in block
    assert "| wasm | simd128_mul_add | 1 thread |" in block and "| 16 threads |" in block  # the peaks table


def test_out_then_update_keeps_the_hand_written_text(synthetic, tmp_path, run_cli):
    page = tmp_path / "docs" / "performance.md"
    code, out, err = run_cli("report", str(synthetic), "--new-page", str(page))
    assert code == 0, err
    text = page.read_text()
    assert "hand-written" in text and perfpage.GENERATED_END in text
    edited = text.replace("_To be written", "Measured: attention dominates. _To be written") + "\nA footnote.\n"
    stale = edited.replace("| 0.40 |", "| 0.99 |")
    page.write_text(stale)
    code, _, err = run_cli("report", str(synthetic), "--update", str(page))
    assert code == 0, err
    assert page.read_text() == edited  # the block regenerated, everything outside it kept
    before, source, block, after = perfpage.split_page(page.read_text(), page)
    assert source == "../../h100" or (page.parent / source).resolve() == synthetic.resolve()
    assert block == perfpage.generated_block(synthetic, page)
    assert "No chart" in block  # the synthetic folder has none; the committed runs' charts are checked elsewhere
    # --new-page never overwrites a page; --update needs one with markers
    code, _, err = run_cli("report", str(synthetic), "--new-page", str(page))
    assert code == 2 and "--update" in err
    bare = tmp_path / "bare.md"
    bare.write_text("# no markers\n")
    code, _, err = run_cli("report", str(synthetic), "--update", str(bare))
    assert code == 2 and "generated block" in err


def test_stdout_without_a_page(synthetic, run_cli):
    code, out, _ = run_cli("report", str(synthetic))
    assert code == 0 and out == perfpage.generated_block(synthetic)


def test_committed_cpu_run_without_peaks_or_peers(run_cli):
    cpu = ROOT / "results" / "cpu-2core"
    if not (cpu / "measurements.csv").is_file():
        pytest.skip("no committed CPU reference run")
    block = perfpage.generated_block(cpu)
    assert "No `peaks.csv`" in block and "tinygpt-bench peak --out" in block
    assert "No engine was measured beside its native peer" in block
    assert "Target" not in block and "not measured" not in block
    assert "A CPU adapter: not a GPU result".lower() in block.lower()
    assert re.search(r"\| large \| \d+\.\d\dx \[\d+\.\d\d-\d+\.\d\d\] \|", block)  # webgpu vs wasm, with its CI
    code, _, err = run_cli("report", str(ROOT / "results"))
    assert code == 2 and "measurements.csv" in err


def test_gpu_ceiling_is_the_fastest_rate_measured_on_that_gpu():
    """A 'peak' below a matmul that ran on the same chip is no ceiling: the faster row is used."""
    import pandas as pd

    pk = pd.DataFrame([
        {"engine": "webgpu", "kind": "peak", "what": "fp32_fma", "device": "H100", "gflop_per_s": 13000.0, "status": "ok"},
        {"engine": "torch-cuda", "kind": "matmul", "what": "matmul", "device": "H100", "gflop_per_s": 51000.0,
         "status": "ok"},
        {"engine": "webgpu", "kind": "matmul", "what": "matmul", "device": "other", "gflop_per_s": 99000.0,
         "status": "ok"},
    ])
    assert perfpage._gpu_ceiling(pk, "H100").gflop_per_s == 51000.0
    assert perfpage._gpu_ceiling(pk, "nothing") is None


def test_peaks_and_diagnoses_of_another_gpu_machine_are_named(synthetic, tmp_path):
    """A peak run or a diagnosis on a machine whose CPU reports the curve run's model and host
    name but beside another GPU (the lent H100 and H200 machines) is called another machine on
    the page, naming its GPU; the same GPU is the curve run's machine."""
    import json
    import shutil

    import pandas as pd

    h200 = [{"name": "NVIDIA H200", "software": False}, {"name": "NVIDIA H200/PCIe/SSE2", "software": False},
            {"name": "llvmpipe (LLVM 15.0.6, 256 bits)", "software": True}]
    cpu = {"cpu_model": "Xeon", "hostname": "gpu-host"}
    assert results.gpu_names({"adapters": h200}) == ["NVIDIA H200", "NVIDIA H200/PCIe/SSE2"]
    assert results.machine_difference({**cpu, "adapters": h200[:1]}, {**cpu, "adapters": h200}) == ""
    assert results.machine_difference({**cpu}, {**cpu, "adapters": h200}) == ""  # no adapters looked for
    h100 = [{"name": "NVIDIA H100 80GB HBM3", "software": False}]
    assert results.machine_difference({**cpu, "adapters": h100}, {**cpu, "adapters": h200}) == (
        "CPU Xeon, host gpu-host, GPUs NVIDIA H100 80GB HBM3")
    assert "CPU EPYC" in results.machine_difference({**cpu, "cpu_model": "EPYC"}, cpu)
    lavapipe = h200[2:]  # a software renderer only: no GPU, which a GPU machine is not
    assert results.machine_difference({**cpu, "adapters": h100}, {**cpu, "adapters": lavapipe}) != ""
    assert results.machine_difference({**cpu, "adapters": lavapipe}, {**cpu, "adapters": h100}) == (
        "CPU Xeon, host gpu-host, GPUs none")
    assert results.machine_difference({**cpu, "adapters": lavapipe}, {**cpu, "adapters": lavapipe}) == ""

    folder = tmp_path / "h200"
    shutil.copytree(synthetic, folder)
    env_path = folder / results.ENVIRONMENT
    env = json.loads(env_path.read_text())
    env["environment"]["adapters"] = h200
    env_path.write_text(json.dumps(env))
    pk = pd.read_csv(folder / results.PEAKS)
    for adapter, other in (("NVIDIA H100 80GB HBM3", True), ("NVIDIA H200", False)):
        pk["adapter"], pk["software_adapter"] = adapter, False
        pk.to_csv(folder / results.PEAKS, index=False)
        line = _row(perfpage.generated_block(folder), "- peak run ")
        assert ("**another machine than the curve run** (CPU Xeon, host gpu-host, GPUs NVIDIA H100 80GB HBM3)"
                in line) == other and ("the curve run's machine" in line) == (not other)

    report = folder / "diagnose-xl-webgpu.json"
    d = json.loads(report.read_text())
    d["environment"] = {**cpu, "adapters": h100}
    report.write_text(json.dumps(d))
    assert "**Measured on another machine** (CPU Xeon, host gpu-host, GPUs NVIDIA H100 80GB HBM3)." in (
        perfpage.generated_block(folder))
