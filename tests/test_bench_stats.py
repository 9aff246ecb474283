"""The bench's figures without processes: percentiles (nearest rank), payloads, the document and its table."""

from __future__ import annotations

import json

import pytest

from eventbus.bench.phase import PhaseResult
from eventbus.bench.report import document, durability_ratios, figures, table, unsuccessful
from eventbus.bench.run import BenchOptions
from eventbus.bench.stats import latency_ms, payload, percentile


def test_percentile_is_the_nearest_rank_sample() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50
    assert percentile(samples, 90) == 90
    assert percentile(samples, 99) == 99
    assert percentile(samples, 99.9) == 100
    assert percentile(samples, 100) == 100
    assert percentile(samples, 0) == 1


def test_percentile_of_one_sample_is_that_sample_and_of_none_is_none() -> None:
    assert percentile([7.0], 99.9) == 7.0
    assert percentile([], 50) is None


def test_percentile_refuses_a_percent_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_ms_gives_every_percentile_in_milliseconds() -> None:
    assert latency_ms([1000, 2000, 3000, 4000]) == {"p50": 2.0, "p90": 4.0, "p99": 4.0, "p99_9": 4.0}


def test_payload_has_about_the_size_asked_and_a_marker_per_task() -> None:
    value = payload(3, 41, 64)
    assert len(json.dumps(value, separators=(",", ":"))) == 64
    assert value["m"] == "3:41" and payload(3, 42, 64) != value


def _phase(ok: int, wall_s: float, *, lost: int = 0) -> PhaseResult:
    return PhaseResult(ok=ok, lost=lost, start=100.0, end=100.0 + wall_s, latencies_us=[1000, 2000], cpu_s=0.5)


def test_the_document_keeps_the_first_mode_at_the_top_and_every_mode_under_durability() -> None:
    opts = BenchOptions(tasks=1000, durability=("fsync", "process", "none"))
    ours = {"fsync": _phase(1000, 2.0), "process": _phase(1000, 1.0), "none": _phase(1000, 0.5)}
    doc = document(opts, ours, _phase(1000, 0.25))
    assert list(doc["durability"]) == ["fsync", "process", "none"]
    assert doc["env"]["durability"] == "fsync"
    assert doc["tasks_per_s"] == doc["durability"]["fsync"]["tasks_per_s"] == 500.0
    assert doc["durability"]["none"]["tasks_per_s"] == 2000.0
    assert doc["durability"]["process"] == figures(ours["process"])
    assert doc["durability_ratio_to_none"] == {"fsync": 0.25, "process": 0.5, "none": 1.0}
    assert doc["throughput_ratio"] == 0.125  # the first mode against the baseline
    lines = table(doc).splitlines()
    assert [line.split()[0] for line in lines if line.startswith(("fsync ", "process ", "none "))] == [
        "fsync",
        "process",
        "none",
    ]
    assert "durability fsync" in lines[-1]
    assert unsuccessful(doc) is None


def test_without_none_there_is_no_ratio_to_none_and_a_lost_task_names_its_mode() -> None:
    doc = document(BenchOptions(baseline=False), {"process": _phase(9, 1.0, lost=1)}, None)
    assert doc["durability_ratio_to_none"] is None and doc["env"]["durability"] == "process"
    assert doc["baseline"] is None and doc["throughput_ratio"] is None
    problem = unsuccessful(doc)
    assert problem is not None and problem.startswith("eventbus: 1 of 10 tasks") and "1 lost" in problem
    two = document(
        BenchOptions(durability=("none", "fsync")), {"none": _phase(10, 1.0), "fsync": _phase(9, 1.0, lost=1)}, None
    )
    problem = unsuccessful(two)
    assert problem is not None and problem.startswith("eventbus (fsync): 1 of 10 tasks")


def test_a_ratio_to_a_mode_that_did_nothing_is_none() -> None:
    assert durability_ratios({"none": {"tasks_per_s": 0.0}, "fsync": {"tasks_per_s": 5.0}}) == {
        "none": None,
        "fsync": None,
    }


@pytest.mark.parametrize("modes", [(), ("fsync", "fsync"), ("sync",)])
def test_bench_options_refuse_no_repeated_or_unknown_modes(modes: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        BenchOptions(durability=modes)
