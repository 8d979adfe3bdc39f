"""Schedules on real Postgres: firing slots once, overlap and catch-up policies, one-shots,
pause / resume / trigger, sync from code, and concurrent sweeps."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from continuum_django import Cron, Every, ScheduleError, schedules
from continuum_django.models import Schedule, WorkflowRun
from tests.testapp import scheduled

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def utc(hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return T0.replace(hour=hour, minute=minute, second=second)


def hourly(name: str = "hourly", **policy: object) -> Schedule:
    row = scheduled.scheduled_echo.schedule(Cron("0 * * * *", name=name, **policy))  # type: ignore[arg-type]
    Schedule.objects.filter(pk=row.pk).update(next_fire_at=utc(12))
    return Schedule.objects.get(pk=row.pk)


def runs_of(name: str) -> list[WorkflowRun]:
    return list(WorkflowRun.objects.filter(attributes__schedule=name).order_by("created_at"))


def keys(name: str) -> list[str]:
    return sorted(r.idempotency_key or "" for r in runs_of(name))


def test_create_sets_the_next_slot_and_refuses_a_taken_name() -> None:
    row = scheduled.scheduled_echo.schedule(Cron("0 9 * * *", tz="Europe/Paris", name="daily"))
    assert row.next_fire_at is not None and row.next_fire_at > schedules.database_now()
    assert row.next_fire_at.astimezone(dt.UTC).hour in (7, 8)  # 9:00 Paris, CEST or CET
    assert len(schedules.next_fire_times(row, 5)) == 5
    with pytest.raises(ScheduleError, match="a schedule named 'daily' already exists"):
        scheduled.scheduled_echo.schedule(Cron("0 10 * * *", name="daily"))


def test_bad_arguments_are_refused_before_anything_is_stored() -> None:
    with pytest.raises(TypeError, match=r"tests\.scheduled_echo"):
        schedules.create(scheduled.scheduled_echo, Cron("* * * * *", name="x", args=(1, 2, 3)))
    with pytest.raises(ScheduleError, match="a schedule needs a name"):
        schedules.create(scheduled.scheduled_echo, Cron("* * * * *"))
    with pytest.raises(ScheduleError, match="schedule name must not be empty"):
        schedules.create(scheduled.scheduled_echo, Cron("* * * * *"), name="")
    assert not Schedule.objects.filter(declared=False).exists()


def test_a_due_slot_starts_one_run_keyed_by_schedule_and_slot() -> None:
    hourly(kwargs={"label": "x"})
    assert schedules.fire_due(now=utc(12, 0, 5)) == {
        "schedules_fired": 1,
        "schedule_slots_dropped": 0,
    }
    assert keys("hourly") == ["schedule:hourly:2026-06-01T12:00:00+00:00"]
    run = runs_of("hourly")[0]
    assert run.input["kwargs"] == {"label": "x"} and run.status == "pending"
    row = Schedule.objects.get(name="hourly")
    assert row.next_fire_at == utc(13) and row.last_run_id == run.id and row.fired_count == 1
    assert schedules.fire_due(now=utc(12, 30))["schedules_fired"] == 0  # nothing due


def test_a_slot_fired_again_returns_the_same_run() -> None:
    hourly(overlap="allow")
    schedules.fire_due(now=utc(12, 0, 5))
    Schedule.objects.filter(name="hourly").update(next_fire_at=utc(12))  # a stale sweep's view
    schedules.fire_due(now=utc(12, 0, 6))
    assert len(runs_of("hourly")) == 1  # the idempotency key is the backstop


@pytest.mark.parametrize(
    ("catchup", "slots"), [("all", [10, 11, 12]), ("last", [12]), ("none", [12])]
)
def test_catchup_policies(catchup: str, slots: list[int]) -> None:
    hourly(overlap="allow", catchup=catchup, catchup_window=dt.timedelta(hours=2, minutes=30))
    Schedule.objects.filter(name="hourly").update(next_fire_at=utc(7))
    schedules.fire_due(now=utc(12, 0, 20))
    assert keys("hourly") == [f"schedule:hourly:2026-06-01T{h}:00:00+00:00" for h in slots]
    row = Schedule.objects.get(name="hourly")
    assert row.dropped_count == 6 - len(slots) and row.next_fire_at == utc(13)


def test_catchup_last_fires_the_newest_missed_slot_when_none_is_on_time() -> None:
    hourly(catchup="last")
    Schedule.objects.filter(name="hourly").update(next_fire_at=utc(9))
    schedules.fire_due(now=utc(11, 40))
    assert keys("hourly") == ["schedule:hourly:2026-06-01T11:00:00+00:00"]


def test_overlap_skip_drops_a_slot_while_the_previous_run_lives() -> None:
    hourly(overlap="skip")
    schedules.fire_due(now=utc(12, 0, 1))
    schedules.fire_due(now=utc(13, 0, 1))  # the 12:00 run is still pending
    assert len(runs_of("hourly")) == 1
    assert Schedule.objects.get(name="hourly").dropped_count == 1
    WorkflowRun.objects.update(status="completed")
    schedules.fire_due(now=utc(14, 0, 1))
    assert len(runs_of("hourly")) == 2


def test_overlap_allow_starts_every_slot() -> None:
    hourly(overlap="allow")
    schedules.fire_due(now=utc(12, 0, 1))
    schedules.fire_due(now=utc(13, 0, 1))
    assert len(runs_of("hourly")) == 2


def test_overlap_buffer_one_keeps_one_slot_until_the_previous_run_ends() -> None:
    hourly(overlap="buffer_one")
    schedules.fire_due(now=utc(12, 0, 1))
    schedules.fire_due(now=utc(13, 0, 1))  # buffered
    schedules.fire_due(now=utc(14, 0, 1))  # dropped: one is buffered already
    row = Schedule.objects.get(name="hourly")
    assert row.buffered_slot == utc(13) and row.dropped_count == 1
    assert len(runs_of("hourly")) == 1
    schedules.fire_due(now=utc(14, 10))  # still live: the buffered slot waits
    assert len(runs_of("hourly")) == 1
    WorkflowRun.objects.update(status="completed")
    assert schedules.fire_due(now=utc(14, 20))["schedules_fired"] == 1
    assert keys("hourly")[-1] == "schedule:hourly:2026-06-01T13:00:00+00:00"
    assert Schedule.objects.get(name="hourly").buffered_slot is None


def test_overlap_cancel_previous_cancels_then_starts() -> None:
    row = schedules.create(
        scheduled.scheduled_wait, Cron("0 * * * *", name="w", overlap="cancel_previous")
    )
    Schedule.objects.filter(pk=row.pk).update(next_fire_at=utc(12))
    schedules.fire_due(now=utc(12, 0, 1))
    schedules.fire_due(now=utc(13, 0, 1))
    first, second = runs_of("w")
    assert WorkflowRun.objects.get(pk=first.id).cancel_requested
    assert not WorkflowRun.objects.get(pk=second.id).cancel_requested


def test_an_interval_schedule() -> None:
    row = schedules.create(scheduled.scheduled_echo, Every(dt.timedelta(minutes=15), name="q"))
    assert row.next_fire_at is not None and row.next_fire_at.minute % 15 == 0
    Schedule.objects.filter(pk=row.pk).update(next_fire_at=utc(12, 15))
    schedules.fire_due(now=utc(12, 15, 2))
    assert Schedule.objects.get(pk=row.pk).next_fire_at == utc(12, 30)


def test_schedule_at_starts_one_run_even_late_and_then_is_done() -> None:
    row = scheduled.scheduled_echo.schedule_at(utc(12), "once")
    assert row.kind == "once" and row.next_fire_at == utc(12)
    schedules.fire_due(now=T0 + dt.timedelta(days=3))  # nothing swept for days: still fires
    done = Schedule.objects.get(pk=row.pk)
    assert done.next_fire_at is None and done.fired_count == 1
    assert runs_of(row.name)[0].input["args"] == ["once"]
    with pytest.raises(ScheduleError, match="has no time zone"):
        scheduled.scheduled_echo.schedule_at(dt.datetime(2026, 1, 1))


def test_pause_resume_and_trigger() -> None:
    row = hourly()
    schedules.pause("hourly", note="maintenance")
    assert schedules.fire_due(now=utc(15))["schedules_fired"] == 0
    assert schedules.next_fire_times(Schedule.objects.get(pk=row.pk)) == []
    resumed = schedules.resume("hourly")
    assert resumed.next_fire_at is not None and resumed.next_fire_at > schedules.database_now()
    run = schedules.trigger("hourly")
    assert WorkflowRun.objects.get(pk=run.id).idempotency_key.startswith("schedule:hourly:trigger:")
    assert schedules.trigger("hourly").id != run.id  # each trigger is a run of its own
    with pytest.raises(ScheduleError, match="no schedule is named 'nope'"):
        schedules.trigger("nope")
    schedules.delete("hourly")
    assert len(runs_of("hourly")) == 2  # runs outlive their schedule


def test_sync_creates_updates_pauses_and_leaves_runtime_schedules_alone() -> None:
    # migrate already synced the declared schedule of tests/testapp/scheduled.py
    declared = Schedule.objects.get(name="tests.yearly")
    assert declared.declared and declared.timezone == "Europe/Paris"
    assert declared.input == {"args": [], "kwargs": {"label": "ny"}}
    runtime_row = hourly("made-at-runtime")
    Schedule.objects.filter(pk=declared.pk).update(cron="0 4 1 1 *", paused=True, pause_note="ops")
    report = schedules.sync_declared()
    assert report.updated == ["tests.yearly"] and not report.created
    synced = Schedule.objects.get(pk=declared.pk)
    assert synced.cron == "0 3 1 1 *" and synced.paused  # an operator's pause is kept

    registry = schedules.default_registry
    key = ("tests.scheduled_yearly", 1)
    definition = registry.workflows.pop(key)
    try:
        assert schedules.sync_declared().paused == []  # already paused by the operator
        Schedule.objects.filter(pk=declared.pk).update(paused=False, pause_note="")
        assert schedules.sync_declared().paused == ["tests.yearly"]
        gone = Schedule.objects.get(pk=declared.pk)
        assert gone.paused and gone.pause_note == schedules.REMOVED_FROM_CODE
    finally:
        registry.workflows[key] = definition
    assert schedules.sync_declared().updated == ["tests.yearly"]  # back in code: resumed
    assert not Schedule.objects.get(pk=declared.pk).paused
    assert schedules.sync_declared().updated == []  # in step with the code: nothing to do
    assert Schedule.objects.get(pk=runtime_row.pk).next_fire_at == utc(12)  # untouched


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_fire_each_slot_once() -> None:
    for i in range(5):
        hourly(f"h{i}", overlap="allow", catchup="all")
    Schedule.objects.filter(name__startswith="h").update(next_fire_at=utc(3))
    barrier = threading.Barrier(6)
    failures: list[BaseException] = []

    def sweep() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(3):
                schedules.fire_due(now=utc(12, 0, 30))
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    for i in range(5):
        assert keys(f"h{i}") == [
            f"schedule:h{i}:2026-06-01T{h:02d}:00:00+00:00" for h in range(3, 13)
        ]
    assert WorkflowRun.objects.count() == 50


def test_a_bad_grace_setting_is_a_system_check_error(settings: object) -> None:
    from django.core import checks

    settings.CONTINUUM = {"SCHEDULE_GRACE": "soon"}  # type: ignore[attr-defined]
    found = [m for m in checks.run_checks(tags=["continuum"]) if m.id == "continuum.E040"]
    assert found and "SCHEDULE_GRACE" in found[0].msg


def test_the_shorthand_with_cron_or_every() -> None:
    from zoneinfo import ZoneInfo

    row = scheduled.scheduled_echo.schedule(
        cron="15 8 * * *", tz=ZoneInfo("Asia/Tokyo"), name="tokyo", kwargs={"label": "jp"}
    )
    assert (row.kind, row.cron, row.timezone) == ("cron", "15 8 * * *", "Asia/Tokyo")
    assert row.input == {"args": [], "kwargs": {"label": "jp"}}
    every = scheduled.scheduled_echo.schedule(every=dt.timedelta(hours=2), name="2h")
    assert every.kind == "interval" and every.interval == dt.timedelta(hours=2)
    with pytest.raises(TypeError, match="one of cron= and every="):
        scheduled.scheduled_echo.schedule(name="neither")


def test_dst_nights_in_paris_fire_each_nightly_slot_once() -> None:
    scheduled.scheduled_echo.schedule(
        Cron("30 2 * * *", tz="Europe/Paris", name="n", overlap="allow")
    )
    gap = dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC)  # 02:30 does not exist: 03:00 CEST
    Schedule.objects.filter(name="n").update(next_fire_at=gap)
    schedules.fire_due(now=gap + dt.timedelta(seconds=5))
    assert Schedule.objects.get(name="n").next_fire_at == dt.datetime(
        2026, 3, 30, 0, 30, tzinfo=dt.UTC
    )

    twice = dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)  # 02:30 CEST, before 02:30 CET
    Schedule.objects.filter(name="n").update(next_fire_at=twice)
    schedules.fire_due(now=twice + dt.timedelta(seconds=5))
    # Not 01:30 UTC (the repeated 02:30 CET): the next is the following night.
    assert Schedule.objects.get(name="n").next_fire_at == dt.datetime(
        2026, 10, 26, 1, 30, tzinfo=dt.UTC
    )
    schedules.fire_due(now=dt.datetime(2026, 10, 25, 1, 30, 5, tzinfo=dt.UTC))
    assert keys("n") == [
        "schedule:n:2026-03-29T01:00:00+00:00", "schedule:n:2026-10-25T00:30:00+00:00",
    ]  # fmt: skip
