"""The record benchmark compares like with like: every variant refuses the same bad bodies and
reads and writes the same records, and a variant that stops validating is caught."""

from __future__ import annotations

from typing import Annotated, Any

import pytest

pytest.importorskip("msgspec", reason="msgspec (the bench extra) is not installed")

import msgspec

from benchmarks import records as r


def test_every_validating_variant_refuses_every_bad_body_and_reads_good_ones_alike() -> None:
    assert r.check() == []


def test_a_variant_that_does_not_validate_is_reported_for_every_bad_body() -> None:
    lax = {name: r._unpack for name in r.BAD}  # msgpack alone: takes anything
    problems = r.rejection_problems({"lax": lax}, r.task_life().bodies())
    assert len(problems) == sum(len(cases) for cases in r.BAD.values())


def test_a_pattern_ending_in_dollar_lets_a_trailing_newline_through_and_is_reported() -> None:
    # Python's ``$`` matches before a final newline; pydantic's regex engine does not
    class Loose(r.SubmitS, frozen=True, kw_only=True):
        operation: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=64)]

    loose = msgspec.msgpack.Decoder(Loose)
    variant = {**r.decoders()["msgspec"], "submit": loose.decode}
    problems = r.rejection_problems({"loose": variant}, r.task_life().bodies())
    assert problems == ["loose submit: accepted operation='echo\\n'"]


def test_pydantic_lax_mode_takes_values_msgspec_refuses() -> None:
    differences = r.lax_differences()
    assert differences and all(line.endswith("taken by pydantic, adapter") for line in differences)


def test_measure_times_every_cell_and_the_per_task_estimate_adds_up() -> None:
    results = r.measure(iterations=3, repeat=1)
    assert all(us > 0 for us in results.values())
    for name, direction, _ in r.PER_TASK:
        for variant in ("msgspec", "adapter" if direction == "decode" else "construct"):
            assert (name, direction, variant) in results
    task: dict[str, Any] = r.per_task(results, daemon_us=350.0)
    assert task["saving_us"] == pytest.approx(task["records_us"] - task["msgspec_us"], abs=0.02)
    assert task["records_share"] > 0
    rows = r.table(results).splitlines()[1:]
    assert len(rows) == len({(name, direction) for name, direction, _ in results})
