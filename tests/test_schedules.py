"""Periodic schedules in the sans-I/O distributor: due times from the wall clock, once each, across restarts,
clock steps and daylight saving time."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributor import DistributorConfig, InvalidRequest, TaskDistributor, TaskState
from distributor.errors import UnknownSchedule
from distributor.schedules import ScheduleSpec, parse_every
from tests.test_distributor import cap, dispatches, ok

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, tz: ZoneInfo = BERLIN) -> float:
    """Epoch seconds of an ISO local time in ``tz`` (its first occurrence)."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def journaled() -> TaskDistributor:
    dist = TaskDistributor(DistributorConfig(heartbeat_timeout_s=1e9))
    dist.journal = True
    return dist


def every(name: str = "beat", seconds: float = 10.0, overlap: str = "queue", **kw: object) -> ScheduleSpec:
    return ScheduleSpec(name=name, operation="echo", every_s=seconds, overlap=overlap, **kw)  # type: ignore[arg-type]


def fired(dist: TaskDistributor, name: str = "beat") -> list[float]:
    """Due times of the runs submitted (their tasks), oldest first."""
    prefix = f"sched.{name}."
    return sorted(int(t.task_id[len(prefix) :]) / 1000 for t in dist.tasks() if t.task_id.startswith(prefix))


def logged(dist: TaskDistributor, name: str = "beat") -> list[float]:
    """Due times of the runs in the schedule's own log (kept across restarts), oldest first."""
    return [r["due"] for r in reversed(dist.schedule(name)["runs"]) if r["note"] == "fired"]


def drive(dist: TaskDistributor, until: float) -> None:
    """Tick at each timer up to ``until`` (no collector: runs stay queued)."""
    while (due := dist.next_timer()) is not None and due <= until:
        dist.tick(due)
    dist.tick(until)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("250ms", 0.25)])
def test_periods_read_with_their_units(text: str, seconds: float) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "0s", "10ms", "5w", "-1s"])
def test_a_bad_period_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="every"):
        parse_every(text)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({}, "one of every or cron"),
        ({"every_s": 5.0, "cron": "* * * * *"}, "one of every or cron"),
        ({"cron": "61 * * * *"}, "not 5 fields"),
        ({"cron": "* * * *"}, "not 5 fields"),
        ({"every_s": 5.0, "timezone": "Mars/Olympus"}, "time zone"),
        ({"every_s": 5.0, "overlap": "pile"}, "overlap"),
        ({"every_s": 5.0, "constraints": ("skill>>3",)}, "constraint"),
        ({"every_s": 5.0, "priority": 11}, "priority"),
    ],
)
def test_a_bad_schedule_is_refused_with_why(fields: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        ScheduleSpec(name="x", operation="echo", **fields)  # type: ignore[arg-type]


def test_an_every_schedule_runs_at_multiples_of_its_period_as_ordinary_tasks() -> None:
    dist = TaskDistributor()
    dist.put_schedule(every(), 3.0)
    assert dist.next_timer() == 10.0
    dist.register(cap("c1"), 4.0)
    (d,) = dispatches(dist.tick(10.0))
    assert d.task.task_id == "sched.beat.10000" and d.task.metadata == {"schedule": "beat"}
    dist.complete(ok(d), 10.5)
    drive(dist, 30.0)
    assert fired(dist) == [10.0, 20.0, 30.0]
    runs = dist.schedule("beat")["runs"]
    assert runs[-1]["state"] == TaskState.SUCCEEDED.value and runs[0]["due"] == 30.0
    assert dist.schedule("beat")["next_due"] == 40.0


def test_missed_due_times_are_caught_up_with_one_run() -> None:
    dist = TaskDistributor()
    dist.put_schedule(every(), 0.0)
    dist.tick(10.0)
    dist.tick(95.0)  # 20 ... 90 were missed (a stopped process, a clock jump forward)
    assert fired(dist) == [10.0, 90.0]
    assert dist.schedule("beat")["next_due"] == 100.0


def test_the_clock_going_back_never_repeats_a_due_time() -> None:
    dist = TaskDistributor()
    dist.put_schedule(every(), 0.0)
    drive(dist, 100.0)
    before = fired(dist)
    for now in (40.0, 55.0, 70.0, 99.0, 100.0):  # the wall clock stepped back 60 s
        dist.tick(now)
    assert fired(dist) == before
    drive(dist, 110.0)
    assert fired(dist) == [*before, 110.0]


def test_a_restart_neither_repeats_a_run_nor_loses_the_missed_one() -> None:
    dist = journaled()
    dist.put_schedule(every(), 0.0)
    dist.tick(10.0)
    dist.tick(20.0)
    (stored,) = [record for name, record in dist.take_changes().schedules if name == "beat"]
    assert stored is not None and stored["last_due"] == 20.0
    back = journaled()
    back.restore_schedules([stored], 20.5)  # restarted just after the run of 20
    back.tick(20.5)
    assert logged(back) == [10.0, 20.0]
    back.tick(30.0)
    assert logged(back) == [10.0, 20.0, 30.0]
    late = journaled()
    late.restore_schedules([stored], 75.0)  # down from 20.5 to 75: 30 ... 70 missed
    late.tick(75.0)
    assert logged(late) == [10.0, 20.0, 70.0]


def test_overlap_skip_records_a_due_time_while_the_last_run_is_unfinished() -> None:
    dist = TaskDistributor()
    dist.put_schedule(every(overlap="skip"), 0.0)
    dist.put_schedule(every("piled"), 0.0)
    drive(dist, 30.0)  # nobody runs them
    runs = dist.schedule("beat")["runs"]
    assert [r["note"].split(":")[0] for r in reversed(runs)] == ["fired", "skipped", "skipped"]
    assert "sched.beat.10000 is still queued" in runs[0]["note"]
    assert len(fired(dist, "piled")) == 3


def test_pause_stops_runs_and_resume_does_not_catch_up_the_paused_time() -> None:
    dist = TaskDistributor()
    dist.put_schedule(every(), 0.0)
    dist.tick(10.0)
    dist.pause_schedule("beat", True, 12.0)
    drive(dist, 100.0)
    assert fired(dist) == [10.0] and dist.schedule("beat")["paused"]
    dist.pause_schedule("beat", False, 105.0)
    dist.tick(105.0)
    assert fired(dist) == [10.0] and dist.schedule("beat")["next_due"] == 110.0
    dist.tick(110.0)
    assert fired(dist) == [10.0, 110.0]
    with pytest.raises(UnknownSchedule):
        dist.pause_schedule("nope", True, 1.0)


def test_a_run_the_queue_refuses_is_recorded_and_the_schedule_goes_on() -> None:
    dist = TaskDistributor(DistributorConfig(max_queue_size=1))
    dist.put_schedule(every(), 0.0)
    drive(dist, 20.0)
    runs = dist.schedule("beat")["runs"]
    assert runs[0]["note"].startswith("refused: queue_full") and runs[1]["note"] == "fired"
    assert dist.schedule("beat")["next_due"] == 30.0


def test_jitter_delays_each_run_within_its_bound() -> None:
    dist = TaskDistributor()
    dist.put_schedule(every(seconds=60.0, jitter_s=5.0), 0.0)
    drive(dist, 600.0)
    for run in dist.schedule("beat")["runs"]:
        info = dist.get(run["task_id"])
        assert info.not_before is None or run["due"] <= info.not_before <= run["due"] + 5.0


def test_removing_a_schedule_stops_it() -> None:
    dist = TaskDistributor()
    dist.put_schedule(every(), 0.0)
    dist.remove_schedule("beat", 1.0)
    drive(dist, 100.0)
    assert dist.schedules() == []
    with pytest.raises(UnknownSchedule):
        dist.remove_schedule("beat", 2.0)


def cron_dues(expr: str, start: float, end: float, tz: str = "Europe/Berlin") -> list[float]:
    dist = TaskDistributor(DistributorConfig(max_queue_size=100_000, max_queued_per_operation=100_000))
    dist.put_schedule(ScheduleSpec(name="c", operation="echo", cron=expr, timezone=tz, overlap="queue"), start)
    drive(dist, end)
    return fired(dist, "c")


def test_a_daily_cron_time_skipped_in_spring_runs_once_at_the_change() -> None:
    dues = cron_dues("30 2 * * *", at("2026-03-28T12:00:00"), at("2026-03-31T12:00:00"))
    assert [datetime.fromtimestamp(d, UTC).isoformat() for d in dues] == [
        "2026-03-29T01:00:00+00:00",  # 02:30 does not exist that night: at the change (03:00 CEST)
        "2026-03-30T00:30:00+00:00",
        "2026-03-31T00:30:00+00:00",
    ]


def test_a_daily_cron_time_repeated_in_autumn_runs_once() -> None:
    dues = cron_dues("30 2 * * *", at("2026-10-24T12:00:00"), at("2026-10-26T12:00:00"))
    assert [datetime.fromtimestamp(d, UTC).isoformat() for d in dues] == [
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST, its first occurrence; not again at 02:30 CET
        "2026-10-26T01:30:00+00:00",
    ]


@pytest.mark.parametrize(
    ("day", "runs"),
    [("2026-03-29", 46), ("2026-10-25", 48), ("2026-06-01", 48)],  # 02:00, 02:30 and 03:00 are one instant in spring
)
def test_a_half_hourly_cron_runs_once_per_local_time_over_a_dst_day(day: str, runs: int) -> None:
    dues = cron_dues("*/30 * * * *", at(f"{day}T00:00:00") - 1, at(f"{day}T23:59:00"))
    assert len(dues) == runs and dues == sorted(set(dues))


def test_a_cron_schedule_in_utc_ignores_local_changes() -> None:
    utc = ZoneInfo("UTC")
    dues = cron_dues("0 * * * *", at("2026-03-29T00:00:00", utc) - 1, at("2026-03-29T23:00:00", utc), "UTC")
    assert len(dues) == 24


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(st.floats(-120.0, 400.0), min_size=1, max_size=60), period=st.sampled_from([7.0, 10.0, 60.0]))
def test_whatever_the_clock_does_each_due_time_runs_at_most_once_in_order(steps: list[float], period: float) -> None:
    dist = TaskDistributor(DistributorConfig(max_queue_size=100_000, max_queued_per_operation=100_000))
    dist.put_schedule(every(seconds=period), 1000.0)
    now, highest = 1000.0, 1000.0
    for step in steps:
        now = max(0.0, now + step)
        dist.tick(now)
        highest = max(highest, now)
        dues = fired(dist)
        assert dues == sorted(set(dues))
        assert all(d <= highest for d in dues)
        if now == highest and now >= 1000.0 + period:
            # caught up: the latest due time passed has run
            assert dues and dues[-1] == (now // period) * period


def test_a_cron_schedule_across_clock_jumps_runs_each_due_time_once() -> None:
    dist = TaskDistributor(DistributorConfig(max_queue_size=100_000, max_queued_per_operation=100_000))
    start = at("2026-10-25T01:00:00")
    spec = ScheduleSpec(name="c", operation="echo", cron="*/5 * * * *", timezone="Europe/Berlin", overlap="queue")
    dist.put_schedule(spec, start)
    # the wall clock as a host may see it: steps back (NTP), forward (a suspend), back again
    for now in [start + s for s in (300, 600, 400, 200, 900, 2400, 2100, 2400, 2700, 3000)]:
        dist.tick(now)
    dues = fired(dist, "c")
    assert dues == sorted(set(dues))
    assert [round(d - start) for d in dues] == [300, 600, 900, 2400, 2700, 3000]  # 1200-2100 caught up by 2400


def test_an_inactive_node_runs_nothing_and_takes_over_from_the_due_times_shared_with_it() -> None:
    follower = TaskDistributor()
    follower.set_schedules_active(False, 0.0)
    follower.put_schedule(every(), 0.0)
    drive(follower, 45.0)
    assert fired(follower) == [] and follower.schedule("beat")["next_due"] == 50.0
    follower.schedule_handled("beat", 40.0)  # the leader ran 10 ... 40
    follower.set_schedules_active(True, 47.0)
    follower.tick(47.0)
    assert fired(follower) == []  # 40 was the leader's; nothing is due again before 50
    follower.tick(50.0)
    assert fired(follower) == [50.0] and follower.schedule_last_dues() == {"beat": 50.0}
    # taking over after the leader went quiet: the due times missed since its last one run once
    late = TaskDistributor()
    late.set_schedules_active(False, 0.0)
    late.put_schedule(every(), 0.0)
    late.schedule_handled("beat", 20.0)
    late.set_schedules_active(True, 75.0)
    late.tick(75.0)
    assert fired(late) == [70.0]
