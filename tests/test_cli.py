import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import tinygpt_bench

ROOT = Path(__file__).resolve().parents[1]


def test_presets_lists_all_nine_with_exact_counts(run_cli):
    code, out, _ = run_cli("presets")
    assert code == 0
    for name, count in (("tiny", "70,464"), ("small", "366,432"), ("behemoth", "473,244,160")):
        assert name in out and count in out
    code, md, _ = run_cli("presets", "--markdown")
    assert code == 0 and sum(line.startswith("| ") for line in md.splitlines()) == 10  # header + nine rows


def test_env_json_has_the_machine(run_cli):
    code, out, _ = run_cli("env", "--json")
    assert code == 0
    info = json.loads(out)
    for key in ("cpu_model", "cpu_usable_cores", "python", "numpy", "wasmtime_features", "adapters", "timestamp"):
        assert key in info
    assert isinstance(info["adapters"], list)


def _head(folder: Path) -> str | None:
    r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def test_git_commit_from_the_package_the_install_or_the_current_directory(tmp_path, monkeypatch):
    """A package in site-packages is beside no checkout: its commit comes from what pip recorded
    (a git URL's commit) or from the current directory when that is a tinygpt-bench checkout; a
    checkout of another project is not taken for it."""
    from tinygpt_bench import __version__, envinfo

    if _head(ROOT) is None:
        pytest.skip("not run from a git checkout")
    assert envinfo.collect_python()["tinygpt_bench"] == __version__
    monkeypatch.setattr(envinfo, "repo_root", lambda: None)  # as a plain, non-editable install
    monkeypatch.setattr(envinfo, "_direct_url", lambda: {})
    monkeypatch.chdir(ROOT / "tests")
    git = envinfo.collect_git()
    assert git["git_commit"] == _head(ROOT) and git["git_source"] == f"current directory: {ROOT}"
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "other"\n')
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    monkeypatch.chdir(other)
    assert envinfo.collect_git() == {"git_commit": None, "git_dirty": None, "git_source": None}
    url = "https://example.org/tinygpt-bench.git"
    monkeypatch.setattr(envinfo, "_direct_url", lambda: {"url": url, "vcs_info": {"vcs": "git", "commit_id": "ab" * 20}})
    assert envinfo.collect_git() == {"git_commit": "ab" * 20, "git_dirty": False, "git_source": f"install source: {url}"}
    monkeypatch.setattr(envinfo, "_direct_url", lambda: {"url": ROOT.as_uri(), "dir_info": {}})
    assert envinfo.collect_git()["git_source"] == f"install source: {ROOT}"


def _error(run_cli, *argv):
    code, out, err = run_cli(*argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_bad_input_is_one_line_exit_2(run_cli, tmp_path):
    assert "unknown preset 'gigantic'" in _error(run_cli, "run", "gigantic")
    assert "unknown backend 'cuda9'" in _error(run_cli, "run", "tiny", "--backend", "cuda9")
    assert "--steps 0" in _error(run_cli, "run", "tiny", "--steps", "0")
    bad = tmp_path / "bad.toml"
    bad.write_text("layers = [")
    assert "malformed TOML" in _error(run_cli, "run", str(bad))
    odd = tmp_path / "odd.toml"
    odd.write_text("layers = 1\nd_model = 10\nheads = 3\nctx = 4\nbatch = 1\n")
    assert "not divisible by heads" in _error(run_cli, "run", str(odd))
    assert "does not exist" in _error(run_cli, "run", "tiny", "--corpus", str(tmp_path / "none.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "is empty" in _error(run_cli, "run", "tiny", "--corpus", str(empty))
    short = tmp_path / "short.txt"
    short.write_text("abc" * 10)
    assert "fewer than ctx+1 = 33" in _error(run_cli, "run", "tiny", "--corpus", str(short))


def test_corrupted_cached_download_exit_2(run_cli, monkeypatch):
    from tinygpt_bench import corpus

    corpus.cache_dir().mkdir(parents=True, exist_ok=True)
    (corpus.cache_dir() / "tinyshakespeare.txt").write_text("not shakespeare " * 100)
    assert "corrupted" in _error(run_cli, "run", "tiny", "--corpus", "shakespeare")


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "tinygpt_bench", "run", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown preset 'nope'")


def test_wheel_carries_package_data_and_runs_from_anywhere(tmp_path):
    pytest.importorskip("hatchling")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = dist.glob("tinygpt_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tinygpt_bench/presets/small.toml" in names
    cli_modules = {f"tinygpt_bench/cli/{p.name}" for p in (ROOT / "tinygpt_bench" / "cli").glob("*.py")}
    assert "tinygpt_bench/cli/__init__.py" in cli_modules and cli_modules <= set(names)  # the CLI package, whole
    assert "tinygpt_bench/engines/wasm/v8_host.mjs" in names  # wasm-v8's JS host
    # what users run, and no development bench (those live in dev/ of a checkout, issue 14)
    assert "tinygpt_bench/wasm/tinygpt.wasm" in names and "tinygpt_bench/presets/behemoth.toml" in names
    assert "tinygpt_bench/kernels/peak.wgsl" in names and "tinygpt_bench/peak.py" in names
    assert {f"tinygpt_bench/kernels/{k.name}" for k in (ROOT / "kernels").glob("*.wgsl")} <= set(names)
    assert {f"tinygpt_bench/presets/{k.name}" for k in (ROOT / "presets").glob("*.toml")} <= set(names)
    dev_tools = ("wgpu_bench", "bench.py", "scaling.py", "ab_module.py", "behemoth.py", "smoke/", "dev/",
                 "scripts/", "bitcheck", "attention_ablation", "matmul_modes", "v8_ab", "publish")
    shipped_dev = [n for n in names for tool in dev_tools if tool in n]
    assert not shipped_dev, f"development tools in the wheel: {shipped_dev}"
    # shipped code imports only shipped modules (peak once imported the WebGPU bench)
    zf = zipfile.ZipFile(wheel)
    dev_stems = {p.stem for p in (ROOT / "dev").glob("*.py")}
    for name in (n for n in names if n.endswith(".py")):
        for node in ast.walk(ast.parse(zf.read(name))):
            if isinstance(node, ast.Import):
                mods, leaves = [a.name for a in node.names], [a.name.rsplit(".", 1)[-1] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods, leaves = [node.module], [a.name for a in node.names] + [node.module.rsplit(".", 1)[-1]]
            else:
                continue
            for mod in (m for m in mods if m.split(".")[0] == "tinygpt_bench"):
                path = mod.replace(".", "/")
                assert f"{path}.py" in names or f"{path}/__init__.py" in names, f"{name} imports {mod}: not shipped"
                assert not dev_stems & set(leaves), f"{name} imports {dev_stems & set(leaves)} from {mod}"
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "tinygpt_bench", "presets", "--markdown"],
        cwd=elsewhere, capture_output=True, text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    assert "473,244,160" in r.stdout
    r = subprocess.run(
        [sys.executable, "-c", "import tinygpt_bench.resources as r; print(r.resource_dir('presets'))"],
        cwd=elsewhere, capture_output=True, text=True, env={"PYTHONPATH": str(site)},
    )
    assert str(site) in r.stdout
    # the installed wheel run from the checkout it was built from records that checkout's commit
    # (-P: the checkout's own package folder is not put on the path), and its version always
    head = _head(ROOT)
    for cwd, commit in ((ROOT, head), (elsewhere, None)):
        r = subprocess.run(
            [sys.executable, "-P", "-c", "import json, tinygpt_bench as t; from tinygpt_bench import envinfo; "
             "print(json.dumps([t.__file__, envinfo.collect_python()['tinygpt_bench'], envinfo.collect_git()]))"],
            cwd=cwd, capture_output=True, text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        )
        where, version, git = json.loads(r.stdout)
        assert where.startswith(str(site)) and version == tinygpt_bench.__version__
        assert git["git_commit"] == commit, (cwd, git)
    # wasm-v8 from the installed wheel: its JS host and the module found inside the package
    r = subprocess.run(
        [sys.executable, "-c", "import tinygpt_bench.engines.wasm.v8 as v; print(v.HOST); "
         "from tinygpt_bench import presets, model; p = presets.load('tiny'); b = v.WasmV8Backend(threads=1); "
         "b.load(p, model.Layout(p).init(0)); import numpy as np; "
         "print(b.step(np.zeros((p.batch, p.ctx + 1), np.int32))); b.close()"],
        cwd=elsewhere, capture_output=True, text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    host, loss = r.stdout.split()
    assert host.startswith(str(site)) and 4.0 < float(loss) < 7.0  # about ln 256 at the initial weights


def test_setup_sh_adapter_diagnosis_runs():
    """setup.sh ends with a diagnosis of what each WebGPU implementation and the browser find,
    a Python block behind `|| true` (so a broken import in it fails no install and was once seen
    only as a traceback in CI's log: quiet_mesa had moved to host.py). Run that block as setup does."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "setup.sh").read_text()
    block = re.search(r"<<'PY' \|\| true\n(.*?)\nPY\n", text, re.S)
    assert block, "setup.sh's diagnosis block (a heredoc ending in PY) not found"
    r = subprocess.run([sys.executable, "-"], input=block.group(1), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for backend in ("webgpu", "webgpu-dawn", "wasm-chrome"):
        assert f"setup: backend {backend}" in r.stdout, r.stdout
