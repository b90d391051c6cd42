import pytest

from tinygpt_bench import diagnose, presets, units
from tinygpt_bench.errors import UserError


def test_parse_bytes():
    assert units.parse_bytes("4GiB") == 4 * 2**30
    assert units.parse_bytes("512MiB") == 512 * 2**20
    assert units.parse_bytes("1e9") == 10**9
    with pytest.raises(UserError, match="not a size"):
        units.parse_bytes("lots")


def test_time_budget_failure_stops_the_walk(tmp_path):
    d = diagnose.run(presets.load("tiny"), "reference-fp32", {}, timeout_s=1e-6)
    assert [s.name for s in d.stages][-1] == "timed" and not d.stages[-1].ok
    assert "time budget" in d.stages[-1].error and "--timeout" in d.stages[-1].meaning
