"""Result files as typed records (results.py): every committed file reads into records and
writes back byte for byte; a record written is the record read; a file of a newer format is
refused in one line with exit 2; reporting imports only results and statistics and never
names an engine in its code."""

import ast
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from tinygpt_bench import engines, results
from tinygpt_bench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
RUNS = sorted(p for p in (ROOT / "results").iterdir() if (p / results.MEASUREMENTS).is_file())
CSVS = [(run / name, cls) for run in RUNS for name, cls in (
    (results.MEASUREMENTS, results.Measurement), (results.STEPS, results.Step), (results.PEAKS, results.Peak))
    if (run / name).is_file()]


@pytest.mark.parametrize("path,cls", CSVS, ids=[f"{p.parent.name}/{p.name}" for p, _ in CSVS])
def test_committed_csv_reads_into_records_and_writes_back_byte_for_byte(path, cls):
    text = path.read_text(encoding="utf-8")
    records = results.codec.parse_csv(path, text, cls, ("format_version",), (), path.name)
    assert records and all(isinstance(r, cls) for r in records)
    assert results.csv_bytes(cls, records, header=True) == path.read_bytes()


DIAGNOSES = sorted((ROOT / "results").glob(f"*/{results.DIAGNOSE_GLOB}"))


@pytest.mark.parametrize("path", DIAGNOSES, ids=[f"{p.parent.name}/{p.name}" for p in DIAGNOSES])
def test_committed_diagnosis_reads_and_writes_back_byte_for_byte(path):
    (d,) = [x for x in results.diagnoses(path.parent) if results.diagnosis_path(path.parent, x.preset, x.backend) == path]
    assert (json.dumps(d.to_json(), indent=2, default=str) + "\n").encode() == path.read_bytes()


def test_committed_rows_carry_what_reporting_needs():
    """Every committed row says the hardware its backend is built for; engines name their peer."""
    for run in RUNS:
        for m in results.measurements([run]):
            assert m.hardware == engines.info(m.backend).hardware, (run.name, m.backend)
            assert m.native_peer == engines.info(m.backend).native_peer, (run.name, m.backend)


def _measurement(**kw) -> results.Measurement:
    base = dict(run_id="r1", timestamp="2026-12-02T00:00:00+00:00", preset="tiny", backend="wasm", status="ok",
                layers=2, d_model=48, params=70464, flops_per_step=217350144, lr=3e-4, median_ms=12.345678,
                q1_ms=11.0, q3_ms=13.5, n_samples=42, loss_rel_diff_backends=9.394487e-08,
                loss_rel_diff_reference=0.0, parity_ok=True, software_adapter=False, device="a, \"quoted\" CPU",
                device_type="CPU", threads=2, runtime_settings="threads=2 relaxed_simd=off", hardware="CPU",
                native_peer="torch-cpu", relaxed_simd=False)
    return results.Measurement(**{**base, **kw})


def test_a_record_written_is_the_record_read(tmp_path):
    env = {"format_version": results.FORMAT_VERSION, "run_id": "r1", "settings": {}, "settings_id": "s",
           "presets": ["tiny"], "backends": ["wasm"]}
    m = _measurement()
    failed = _measurement(preset="small", status="failed", stage="create", error="no, it | broke",
                          median_ms=None, parity_ok=None, relaxed_simd=None, threads=None)
    steps = [results.Step(run_id="r1", preset="tiny", backend="wasm", repeat=1, step=s, ms=1.5 * s, loss=5.5 - s / 10)
             for s in (1, 2, 3)]
    w = results.ResultWriter(tmp_path, env, resume=False)
    w.commit(m, steps)
    w.commit(failed, [])
    w.close()
    assert results.measurements([tmp_path]) == [m, failed]
    assert results.steps([tmp_path]) == steps
    assert results.load_environment(tmp_path / results.ENVIRONMENT)["format_version"] == results.FORMAT_VERSION
    # a later row for the same (preset, backend) supersedes the earlier one (a resumed run)
    w = results.ResultWriter(tmp_path, env, resume=True)
    redone = dataclasses.replace(m, run_id="r2", median_ms=10.0)
    w.measurement(redone)
    w.close()
    assert results.measurements([tmp_path]) == [failed, redone]


def test_a_writer_takes_records_only(tmp_path):
    env = {"format_version": results.FORMAT_VERSION, "run_id": "r1", "settings": {}, "settings_id": "s",
           "presets": [], "backends": []}
    w = results.ResultWriter(tmp_path, env, resume=False)
    try:
        with pytest.raises(TypeError, match="Measurement expected"):
            w.measurement({"run_id": "r1", "preset": "tiny", "backend": "wasm", "status": "ok"})
    finally:
        w.close()


def test_peaks_and_diagnoses_round_trip(tmp_path):
    p = results.Peak(run_id="p1", engine="wasm", kind="peak", what="simd128_mul_add", threads=16, flops=1920000000,
                     seconds=0.0751464, gflop_per_s=25.5501, max_rel_err=0.0, status="ok", relaxed_simd=False,
                     software_adapter=None)
    results.write_peaks(tmp_path / results.PEAKS, [p])
    assert results.peaks(tmp_path) == [p]
    d = results.Diagnosis(preset="xl", backend="wasm", kernel_timing="wall time", options={"threads": 2}, ok=True,
                          stages=[{"name": "timed", "ok": True, "figure": "1 ms", "error": "", "meaning": "",
                                   "detail": {}}], environment={"cpu_model": "x"})
    md, js = results.write_diagnosis(tmp_path, d, "# report\n")
    assert md.read_text() == "# report\n" and results.diagnoses(tmp_path) == [d]


def test_a_typed_column_of_the_wrong_type_names_file_line_and_column(tmp_path):
    lines = results.csv_bytes(results.Measurement, [_measurement()], header=True).decode().splitlines()
    (tmp_path / results.MEASUREMENTS).write_text(lines[0] + "\n" + lines[1].replace(",true,", ",maybe,", 1) + "\n")
    with pytest.raises(UserError, match=r"measurements.csv, line 2: parity_ok is 'maybe', not true or false"):
        results.measurements([tmp_path], environment=False)


def _newer(path: Path) -> None:
    v = str(results.FORMAT_VERSION)
    if path.suffix == ".json":
        d = json.loads(path.read_text())
        d["format_version"] = results.FORMAT_VERSION + 1
        path.write_text(json.dumps(d))
    else:
        head, *rows = path.read_text().splitlines(keepends=True)
        assert rows[0].startswith(v + ",")
        path.write_text(head + str(results.FORMAT_VERSION + 1) + rows[0][len(v):] + "".join(rows[1:]))


@pytest.mark.parametrize("name", ["peaks.csv", "diagnose-xl-webgpu.json", "measurements.csv", "environment.json"])
def test_a_newer_format_is_refused_in_one_line(name, tmp_path, run_cli):
    run = tmp_path / "h100"
    shutil.copytree(ROOT / "results" / "h100", run)
    _newer(run / name)
    code, out, err = run_cli("report", str(run))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in out + err, err
    assert f"format version {results.FORMAT_VERSION + 1!r}" in lines[0] or \
        f"format version '{results.FORMAT_VERSION + 1}'" in lines[0], lines[0]
    assert name in lines[0] and "upgrade tinygpt-bench to read it" in lines[0]


# ---- reporting reads only results ----------------------------------------------------------

REPORTING = ("report", "chart", "perfpage", "compare", "markdown")
ALLOWED = {"results", "stats", "errors", "units", *REPORTING}


def _tree(module: str) -> ast.Module:
    return ast.parse((ROOT / "tinygpt_bench" / f"{module}.py").read_text())


@pytest.mark.parametrize("module", REPORTING)
def test_reporting_imports_only_results_and_statistics(module):
    imported = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinygpt_bench"):
            if node.module == "tinygpt_bench":
                imported |= {a.name for a in node.names}
            else:
                imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tinygpt_bench.")}
    assert imported <= ALLOWED, f"{module} imports {sorted(imported - ALLOWED)}"


@pytest.mark.parametrize("module", REPORTING)
def test_reporting_names_no_engine_in_its_code(module):
    """What reporting knows of a backend comes from its rows: no string in its code is a
    backend's name (prose may mention them)."""
    names = set(engines.names())
    found = [n.value for n in ast.walk(_tree(module)) if isinstance(n, ast.Constant) and n.value in names]
    assert not found, f"{module} names {found}"


# ---- dev/migrate_results.py: format 1 -> 2 ---------------------------------------------------

NEW_COLUMNS = {results.MEASUREMENTS: ("hardware", "native_peer", "relaxed_simd"), results.PEAKS: ("relaxed_simd",),
               results.STEPS: ()}


def _as_format_1(src: Path, dst: Path) -> None:
    """A committed folder as format 1 wrote it: without format 2's columns and keys."""
    import csv
    import io

    dst.mkdir()
    for f in src.iterdir():
        if f.name in NEW_COLUMNS:
            rows = list(csv.DictReader(io.StringIO(f.read_text())))
            cols = [c for c in rows[0] if c not in NEW_COLUMNS[f.name]]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows({**r, "format_version": "1"} for r in rows)
            (dst / f.name).write_text(buf.getvalue())
        elif f.name == results.ENVIRONMENT:
            (dst / f.name).write_text(f.read_text().replace(f'"format_version": {results.FORMAT_VERSION},',
                                                            '"format_version": 1,', 1))
        elif f.match(results.DIAGNOSE_GLOB):
            d = json.loads(f.read_text())
            del d["format_version"], d["kernel_timing"]
            (dst / f.name).write_text(json.dumps(d, indent=2) + "\n")
        else:
            shutil.copy(f, dst / f.name)


@pytest.mark.parametrize("run", ["h100", "cpu-2core"])
def test_migration_from_format_1_gives_the_committed_files(run, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("migrate_results", ROOT / "dev" / "migrate_results.py")
    mig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mig)
    old = tmp_path / run
    _as_format_1(ROOT / "results" / run, old)
    with pytest.raises(UserError, match="dev/migrate_results.py"):
        results.measurements([old])
    assert mig.migrate(old)
    for f in sorted((ROOT / "results" / run).iterdir()):
        assert (old / f.name).read_bytes() == f.read_bytes(), f.name
    assert mig.migrate(old) == []  # a current folder is left as it is


# ---- dev/publish-take.sh: a publish part's tarball as the folder the next part resumes --------

def test_publish_take_replaces_the_folder_only_with_a_whole_run(tmp_path):
    """The tarball of a part unpacks into the folder (what was there replaced) and the kept
    repeats are listed; a tarball that does not unpack, or holds no run, leaves it as it was."""
    import subprocess
    import tarfile

    script = Path(__file__).resolve().parents[1] / "dev" / "publish-take.sh"
    part = tmp_path / "part"
    (part / results.IN_PROGRESS).mkdir(parents=True)
    (part / "measurements.csv").write_text("header\nrow1\nrow2\n")
    (part / "environment.json").write_text("{}")
    (part / results.IN_PROGRESS / "behemoth__wasm.json").write_text('{"repeats": 2}')
    tgz = tmp_path / "part.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        for p in sorted(part.rglob("*")):
            t.add(p, arcname=str(p.relative_to(part)), recursive=False)
    folder = tmp_path / "pubstate" / "h200"
    folder.mkdir(parents=True)
    (folder / "stale.txt").write_text("from an earlier part")

    def take(tarball):
        return subprocess.run(["bash", str(script), str(tarball), str(folder)], capture_output=True, text=True)

    r = take(tgz)
    assert r.returncode == 0, r.stderr
    assert "2 measurement rows" in r.stdout and "behemoth__wasm: 2 repeat(s)" in r.stdout
    assert not (folder / "stale.txt").exists() and (folder / "measurements.csv").read_text().endswith("row2\n")
    bad = tmp_path / "bad.tgz"
    bad.write_text("not a tarball")
    empty = tmp_path / "empty.tgz"
    with tarfile.open(empty, "w:gz") as t:
        t.add(part / "environment.json", arcname="environment.json")
    for tarball, said in ((bad, "does not unpack"), (empty, "holds no measurements.csv"),
                          (tmp_path / "missing.tgz", "no tarball")):
        r = take(tarball)
        assert r.returncode == 2 and said in r.stderr
        assert (folder / "measurements.csv").is_file()  # left as it was
    assert sorted(p.name for p in folder.parent.iterdir()) == ["h200"]  # no unpacking left behind


# ---- the results package: one job a module, imports going one way --------------------------

LAYERS = ["schema", "store", "codec", "machine", "readers", "resume", "writer"]  # each imports only those before it


@pytest.mark.parametrize("module", LAYERS)
def test_results_modules_import_only_errors_and_the_modules_below_them(module):
    tree = ast.parse((ROOT / "tinygpt_bench" / "results" / f"{module}.py").read_text())
    below = set(LAYERS[:LAYERS.index(module)])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinygpt_bench"):
            parts = node.module.split(".")
            names = [parts[2]] if len(parts) > 2 else [a.name for a in node.names]
            if parts[1] == "errors":
                continue
            assert parts[1] == "results" and set(names) <= below, f"results/{module}.py imports {node.module} {names}"
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("tinygpt_bench") for a in node.names), module


def test_the_package_is_all_its_modules():
    found = sorted(p.stem for p in (ROOT / "tinygpt_bench" / "results").glob("*.py") if p.stem != "__init__")
    assert found == sorted(LAYERS)
