"""Issue 26's acceptance, table-driven: each kind of damage applied to each results file, run
through every reader (summary, chart --check, compare, report) and through `curve --resume`
(reference, tiny, 2 steps, 1 repeat). Expected, case by case: a clean refusal (its exit code,
one line on stderr naming the file, no traceback, every file byte for byte as it was) where the
reader reads the damaged file and the damage is real; else the result of the undamaged folder.
Then a seeded property loop: random truncations and corruptions at any byte offset, read and
resumed in-process: never a traceback, never a glued or shifted row."""

import csv
import io
import json
import random
import shutil
from pathlib import Path

import pytest

from tinygpt_bench import cli, report, results

CHEAP = ["--backends", "reference", "--steps", "2", "--repeats", "1", "--plain", "--no-chart"]
DIAG = "diagnose-tiny-reference.json"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A run of tiny on reference with its chart, a peaks.csv and a diagnose report: every file
    the readers take."""
    out = tmp_path_factory.mktemp("good") / "run"
    for argv in (["curve", "--presets", "tiny", *CHEAP, "--out", str(out)], ["chart", str(out)]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code in (0, None)
    results.write_peaks(out / results.PEAKS, [results.Peak(
        run_id="p1", engine="reference", kind="matmul", what="numpy", threads=1, flops=2000000, seconds=0.5,
        gflop_per_s=0.004, max_rel_err=0.0, status="ok")])
    results.write_diagnosis(out, results.Diagnosis(
        preset="tiny", backend="reference", ok=True, stages=[{"name": "timed", "ok": True, "figure": "1 ms",
                                                             "error": "", "meaning": "", "detail": {}}],
        environment={"cpu_model": "x"}), "# diagnose\n")
    return out


# ---- the damage: (kind, fn(bytes of the file) -> bytes) ---------------------------------------

def _rows(b: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b.decode())))


def _csv(rows) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


NUMBER = {results.MEASUREMENTS: "median_ms", results.STEPS: "ms", results.PEAKS: "gflop_per_s"}


def _set(name, value):
    def fn(b):
        rows = _rows(b)
        rows[-1][rows[0].index(NUMBER[name])] = value
        return _csv(rows)
    return fn


def _cut_field(b: bytes) -> bytes:
    """The last row cut inside its last field (no line end): still a number, a wrong one."""
    body = b[:-1]
    return body[: len(body) - max(1, len(body.rsplit(b",", 1)[1]) // 2)]


def csv_damage(name):
    return {
        "missing-final-newline": lambda b: b[:-1],
        "truncated-field": _cut_field,
        "truncated-row": lambda b: b[: len(b) - len(b.splitlines()[-1]) // 2 - 1],
        "reordered-columns": lambda b: _csv([list(reversed(r)) for r in _rows(b)]),
        "duplicated-row": lambda b: b + b.splitlines(keepends=True)[-1],
        "wrong-type": _set(name, "fast"),
        "nan": _set(name, "nan"),
        "inf": _set(name, "inf"),
        "negative": _set(name, "-1.5"),
        "zero": _set(name, "0"),
        "binary": lambda b: bytes(range(256)) * 4,
        "empty": lambda b: b"",
        "header-alone": lambda b: b.splitlines(keepends=True)[0],
        "nul-byte": lambda b: b[:-3] + b"\0" + b[-2:],
        "unclosed-quote": lambda b: b[:-1] + b',"x\n',
    }


def _key_string(key):
    def fn(b):
        d = json.loads(b)
        d[key] = "a string"
        return json.dumps(d, indent=2).encode() + b"\n"
    return fn


def json_damage(key):
    return {
        "missing-final-newline": lambda b: b[:-1],
        "truncated": lambda b: b[: len(b) // 2],
        "empty": lambda b: b"",
        "binary": lambda b: bytes(range(256)) * 4,
        "a-list": lambda b: b"[1, 2, 3]\n",
        "a-string": lambda b: b'"results"\n',
        "a-number": lambda b: b"42\n",
        "null": lambda b: b"null\n",
        "key-a-string": _key_string(key),
        "nan-version": lambda b: b.replace(b'"format_version": ', b'"format_version": NaN, "x": ', 1),
    }


FILES = {results.MEASUREMENTS: csv_damage(results.MEASUREMENTS), results.STEPS: csv_damage(results.STEPS),
         results.PEAKS: csv_damage(results.PEAKS), results.ENVIRONMENT: json_damage("settings"),
         "chart-data.json": json_damage("speedup_points"), DIAG: json_damage("stages")}

# which files each reader reads (the rest it must not notice)
CORE = {results.MEASUREMENTS, results.STEPS, results.ENVIRONMENT}
READS = {"summary": CORE, "chart": CORE | {"chart-data.json"}, "compare": CORE,
         "report": CORE | {results.PEAKS, DIAG}, "resume": CORE}
# damage that is no damage: read as the undamaged file (reordered columns are read by name; a
# later row of a measurement supersedes an earlier one; a JSON object needs no final line end)
HARMLESS = {"reordered-columns", "missing-final-newline@json", "duplicated-row@measurements.csv"}
# damage that --resume repairs without losing anything: it measures what the file lacks
RESUMED = {"header-alone@measurements.csv", "empty@measurements.csv", "header-alone@steps.csv", "empty@steps.csv"}
# a correct result that differs: a peaks.csv of no rows, or a row twice (each peak shown as measured)
READ_AS_IS = {"header-alone@peaks.csv", "duplicated-row@peaks.csv"}


def expected(name: str, kind: str, reader: str) -> str:
    """'refuse', 'same' (the undamaged folder's output) or 'ok' (exit 0, a correct result that
    may differ: a folder resumed, a summary without steps)."""
    tags = {kind, f"{kind}@{name}", f"{kind}@json" if name.endswith(".json") else ""}
    if name not in READS[reader] or tags & HARMLESS:
        return "same"
    if reader == "resume" and tags & RESUMED:
        return "ok"
    if (kind == "header-alone" and name == results.STEPS) or tags & READ_AS_IS:
        return "ok"  # no step times: medians without intervals; peaks as they are
    return "refuse"


CASES = [(name, kind, reader) for name, kinds in FILES.items() for kind in kinds for reader in READS]


def argv(reader: str, good: Path, run: Path) -> list[str]:
    return {"summary": ["summary", str(run), "--markdown"], "chart": ["chart", str(run), "--check"],
            "compare": ["compare", str(good), str(run), "--markdown"], "report": ["report", str(run)],
            "resume": ["curve", "--presets", "tiny", *CHEAP, "--out", str(run), "--resume"]}[reader]


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != results.LOCK}


@pytest.fixture(scope="module")
def baseline(good, tmp_path_factory):
    """Each reader's exit code and stdout on an undamaged copy."""
    out = {}
    for reader in READS:
        run = tmp_path_factory.mktemp("base") / "run"
        shutil.copytree(good, run)
        out[reader] = _cli(argv(reader, good, run), run, good)
    return out


def _cli(args, run: Path, good: Path):
    code = 0
    buf_out, buf_err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        try:
            cli.main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, buf_out.getvalue().replace(str(run), "RUN").replace(str(good), "GOOD"), buf_err.getvalue()


def test_the_table_has_at_least_150_cases():
    assert len(CASES) >= 150


@pytest.mark.parametrize("name,kind,reader", CASES, ids=[f"{n}/{k}/{r}" for n, k, r in CASES])
def test_damage(name, kind, reader, good, baseline, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(good, run)
    (run / name).write_bytes(FILES[name][kind]((run / name).read_bytes()))
    before = snapshot(run)
    code, out, err = _cli(argv(reader, good, run), run, good)
    assert "Traceback" not in out + err and "error: unexpected" not in err, err
    want = expected(name, kind, reader)
    if want == "refuse":
        lines = err.strip().splitlines()
        assert code in ((1, 2) if reader == "chart" else (2,)) and len(lines) == 1, (code, err)
        assert name in lines[0], lines[0]
        assert snapshot(run) == before
    elif want == "same":
        assert (code, out) == baseline[reader][:2], err
        if reader != "resume":
            assert snapshot(run) == before
    else:
        assert code == 0, err
        if reader == "resume":
            assert [(m.preset, m.backend) for m in results.measurements([run])] == [("tiny", "reference")]


# ---- the property: random truncation and corruption, read and resumed in-process --------------

def _records(run: Path):
    return results.measurements([run], require_rows=False, environment=False), results.readers.step_file(
        run / results.STEPS)


def _close(rec, originals) -> bool:
    """A record read equals an original one but for at most one value (a corrupted digit): never
    a row glued to another or shifted into other columns."""
    fields = type(rec).columns()
    return any(sum(getattr(rec, f) != getattr(o, f) for f in fields) <= 1 for o in originals)


def _append_one(run: Path, env: dict) -> None:
    """What --resume does after its check, in-process: a writer on the folder, one measurement."""
    w = results.ResultWriter(run, env, resume=True)
    try:
        w.commit(results.Measurement(run_id="new", preset="added", backend="reference", status="ok", layers=1,
                                     params=10, flops_per_step=100, median_ms=2.5),
                 [results.Step(run_id="new", preset="added", backend="reference", repeat=1, step=1, ms=2.5, loss=3.0)])
    finally:
        w.close()


def test_random_truncation_and_corruption_never_glue_shift_or_raise(good, tmp_path):
    rng = random.Random(26)
    env = results.load_environment(good / results.ENVIRONMENT)
    m0, s0 = _records(good)
    n = 0
    for i in range(1000):
        run = tmp_path / f"r{i}"
        run.mkdir()
        for f in (results.MEASUREMENTS, results.STEPS, results.ENVIRONMENT):
            shutil.copy(good / f, run / f)
        name = rng.choice([results.MEASUREMENTS, results.STEPS])
        data = (run / name).read_bytes()
        at = rng.randrange(len(data) + 1)
        if rng.random() < 0.5:
            data = data[:at]
        else:
            data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1:]
        (run / name).write_bytes(data)
        before = snapshot(run)
        try:
            m, s = _records(run)
            report.summary_rows(results.read_measurements([run]), results.read_steps([run]))
        except results.UserError as e:
            assert len(str(e).splitlines()) == 1
            d = results.decide(run, env, True)
            assert d.refusal or not data, (i, str(e))  # a file of 0 bytes: resume gives it its header
            assert snapshot(run) == before
            shutil.rmtree(run)
            continue
        assert all(_close(r, m0) for r in m) and all(_close(r, s0) for r in s), i
        if not results.decide(run, env, True).refusal:
            counted = results.steps([run])  # a step counts with its measurement's row
            _append_one(run, env)
            m2, s2 = _records(run)
            assert m2[-1].preset == "added" and m2[-1].median_ms == 2.5 and all(_close(r, m0) for r in m2[:-1])
            assert s2[-1].preset == "added" and s2[-1].ms == 2.5 and results.steps([run]) == [*counted, s2[-1]]
            n += 1
        shutil.rmtree(run)
    assert n > 10  # some damage left the files readable and the append was checked
