"""The bench's percentiles: nearest rank, always one of the samples."""

from __future__ import annotations

import json

import pytest

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
