"""Flow control in the claim, on real Postgres: keys on the task row, limits counted when an
attempt is claimed, tasks waiting instead of failing, freed slots handed on in priority order,
and rate limits spacing starts on the database's clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from continuum_django.engine.journal import ActivityClaim, Throttled
from continuum_django.engine.runtime import Runtime
from continuum_django.models import ActivityTask, FlowBucket
from continuum_django.worker import runtime
from tests.e2e.helpers import PAST
from tests.testapp import flow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def engine() -> Runtime:
    return dataclasses.replace(runtime(), eager_steps=0)  # every attempt claimed by the test


def _task(engine: Runtime, wf: Any, *args: Any) -> ActivityTask:
    """Start a run of ``wf`` and advance it to its (one) activity task."""
    run = wf.start(*args)
    engine.advance_run(run.id)
    return ActivityTask.objects.get(run_id=run.id)


def _claim(engine: Runtime, task: ActivityTask) -> ActivityClaim | Throttled | None:
    return engine.journal.claim_activity(task.id, "worker-a", 30)


def _state(task: ActivityTask) -> str:
    return ActivityTask.objects.get(pk=task.pk).flow_state


def test_the_key_from_an_argument_name_and_the_limits_are_on_the_task(engine: Runtime) -> None:
    task = _task(engine, flow.charge_customer, "c-1", 5)
    assert (task.flow_key, task.flow, task.priority) == ("c-1", {"concurrency": 1, "rate": None}, 0)
    scheduled = task.run.events.get(type="activity_scheduled")
    assert scheduled.payload["flow"] == {
        "priority": 0,
        "key": "c-1",
        "concurrency": 1,
        "rate": None,
    }


def test_the_key_from_a_function_of_the_arguments(engine: Runtime) -> None:
    task = _task(engine, flow.tenant_order, "acme")
    assert (task.flow_key, task.flow) == ("acme", {"concurrency": 2, "rate": None})


def test_an_activity_without_limits_has_none_on_its_task(engine: Runtime) -> None:
    from tests.testapp import workflows as wf

    run = wf.three_steps.start(1)
    engine.advance_run(run.id)
    task = ActivityTask.objects.get(run_id=run.id)
    assert (task.flow, task.flow_key, task.priority, task.flow_state) == (None, "", 0, "")
    assert "flow" not in task.run.events.get(type="activity_scheduled").payload


def test_over_the_limit_a_task_waits_while_other_keys_proceed(engine: Runtime) -> None:
    first = _task(engine, flow.charge_customer, "c-1", 1)
    second = _task(engine, flow.charge_customer, "c-1", 2)
    other = _task(engine, flow.charge_customer, "c-2", 3)
    assert isinstance(_claim(engine, first), ActivityClaim)
    throttled = _claim(engine, second)
    assert isinstance(throttled, Throttled) and throttled.reason == "concurrency"
    assert not throttled.dispatch  # no message: it waits for a hand-off, not a clock
    assert _state(second) == "slot"
    assert ActivityTask.objects.get(pk=second.pk).status == "scheduled"  # waiting, not failed
    assert isinstance(_claim(engine, other), ActivityClaim)
    # Waiting for a slot, it is not re-sent by the sweep either (no polling).
    engine.journal.due_activities(100, 0.0)
    assert _state(second) == "slot"


def test_a_finished_attempt_hands_its_slot_to_the_waiting_task(engine: Runtime) -> None:
    first = _task(engine, flow.charge_customer, "c-1", 1)
    second = _task(engine, flow.charge_customer, "c-1", 2)
    claim = _claim(engine, first)
    assert isinstance(claim, ActivityClaim)
    assert isinstance(_claim(engine, second), Throttled)
    dispatch = engine.journal.finish_activity(claim, result=1)
    assert (second.id, second.queue, None) in dispatch.activities
    assert _state(second) == "granted"
    granted = _claim(engine, second)
    assert isinstance(granted, ActivityClaim) and _state(second) == ""


def test_a_failed_attempt_retrying_later_frees_its_slot(engine: Runtime) -> None:
    first = _task(engine, flow.charge_customer, "c-1", 1)
    second = _task(engine, flow.charge_customer, "c-1", 2)
    claim = _claim(engine, first)
    assert isinstance(claim, ActivityClaim)
    assert isinstance(_claim(engine, second), Throttled)
    error = {"type": "X", "message": "boom", "non_retryable": False, "traceback": ""}
    dispatch = engine.journal.finish_activity(claim, error=error, retry_delay=60.0)
    assert (second.id, second.queue, None) in dispatch.activities


def test_an_expired_lease_frees_its_slot_and_the_sweep_hands_it_on(engine: Runtime) -> None:
    first = _task(engine, flow.charge_customer, "c-1", 1)
    second = _task(engine, flow.charge_customer, "c-1", 2)
    assert isinstance(_claim(engine, first), ActivityClaim)
    assert isinstance(_claim(engine, second), Throttled)
    ActivityTask.objects.filter(pk=first.pk).update(lease_expires_at=PAST)
    engine.sweep()
    assert _state(second) == "granted"
    assert isinstance(_claim(engine, second), ActivityClaim)


def test_waiting_tasks_are_granted_by_priority_then_age(engine: Runtime) -> None:
    blocker = _task(engine, flow.serial_run, "blocker", 0)
    held = _claim(engine, blocker)
    assert isinstance(held, ActivityClaim)
    waiting = [
        _task(engine, flow.serial_run, label, priority)
        for label, priority in [("low", 0), ("high-1", 5), ("mid", 1), ("high-2", 5)]
    ]
    assert all(isinstance(_claim(engine, task), Throttled) for task in waiting)
    assert [t.priority for t in waiting] == [0, 5, 1, 5]
    order = []
    while True:
        dispatch = engine.journal.finish_activity(held, result="done")
        granted = [task_id for task_id, _, _ in dispatch.activities]
        if not granted:
            break
        assert len(granted) == 1
        task = ActivityTask.objects.get(pk=granted[0])
        order.append(task.args[0])
        claim = _claim(engine, task)
        assert isinstance(claim, ActivityClaim)
        held = claim
    assert order == ["high-1", "high-2", "mid", "low"]


def test_a_new_task_does_not_overtake_waiting_tasks_that_outrank_it(engine: Runtime) -> None:
    blocker = _task(engine, flow.serial_run, "blocker", 0)
    held = _claim(engine, blocker)
    assert isinstance(held, ActivityClaim)
    urgent = _task(engine, flow.serial_run, "urgent", 9)
    assert isinstance(_claim(engine, urgent), Throttled)
    # The slot frees, but before the hand-off's message arrives a new low task is claimed.
    engine.journal.finish_activity(held, result="done")
    late = _task(engine, flow.serial_run, "late", 0)
    assert isinstance(_claim(engine, late), Throttled)  # the granted slot is urgent's
    assert isinstance(_claim(engine, urgent), ActivityClaim)


def test_a_rate_limit_spaces_starts_on_the_database_clock(engine: Runtime) -> None:
    tasks = [_task(engine, flow.rated_run, n, "6/m") for n in range(3)]
    assert isinstance(_claim(engine, tasks[0]), ActivityClaim)
    second, third = _claim(engine, tasks[1]), _claim(engine, tasks[2])
    assert isinstance(second, Throttled) and isinstance(third, Throttled)
    assert second.reason == third.reason == "rate"
    (_, _, at_second), (_, _, at_third) = (
        second.dispatch.activities[0],
        third.dispatch.activities[0],
    )
    assert at_second is not None and at_third is not None
    assert at_third - at_second == dt.timedelta(seconds=10)  # "6/m": one every 10 s
    row = ActivityTask.objects.get(pk=tasks[1].pk)
    assert (row.flow_state, row.next_attempt_at) == ("rate", at_second)
    # A message that comes before its time is sent again for then.
    early = _claim(engine, tasks[1])
    assert isinstance(early, Throttled) and early.dispatch.activities[0][2] == at_second
    # A booked task that comes while starts are still crowded (the bucket's next start is
    # ahead: others started late) is booked again, behind those already booked.
    ActivityTask.objects.filter(pk=tasks[1].pk).update(next_attempt_at=PAST)
    again = _claim(engine, tasks[1])
    assert isinstance(again, Throttled) and again.dispatch.activities[0][2] == at_third + (
        dt.timedelta(seconds=10)
    )
    # At its time (the bucket's clock moved there too), its booked start is honoured without
    # booking another.
    bucket = FlowBucket.objects.get(activity="flow.rated")
    FlowBucket.objects.filter(pk=bucket.pk).update(due_at=PAST)
    ActivityTask.objects.filter(pk=tasks[2].pk).update(next_attempt_at=PAST)
    assert isinstance(_claim(engine, tasks[2]), ActivityClaim)
    assert FlowBucket.objects.get(pk=bucket.pk).booked_to == bucket.booked_to


def test_a_cancelled_run_does_not_keep_its_granted_slot(engine: Runtime) -> None:
    first = _task(engine, flow.charge_customer, "c-1", 1)
    second = _task(engine, flow.charge_customer, "c-1", 2)
    third = _task(engine, flow.charge_customer, "c-1", 3)
    claim = _claim(engine, first)
    assert isinstance(claim, ActivityClaim)
    assert isinstance(_claim(engine, second), Throttled)
    assert isinstance(_claim(engine, third), Throttled)
    engine.journal.finish_activity(claim, result=1)
    assert _state(second) == "granted"
    import continuum_django as continuum

    continuum.cancel(str(second.run_id), terminate=True)
    engine.sweep()
    assert _state(third) == "granted"


def test_waiting_tasks_show_in_health_and_are_not_reported_stuck(engine: Runtime) -> None:
    from io import StringIO

    from django.core.management import call_command

    from continuum_django.health import health_report

    first = _task(engine, flow.charge_customer, "c-1", 1)
    second = _task(engine, flow.charge_customer, "c-1", 2)
    assert isinstance(_claim(engine, first), ActivityClaim)
    assert isinstance(_claim(engine, second), Throttled)
    ActivityTask.objects.filter(pk=second.pk).update(updated_at=PAST - dt.timedelta(hours=1))
    report = health_report()
    assert report.throttled_activities == {"slot": 1}
    assert report.waiting_activities.count == 0  # waiting for a slot is not being stuck
    out = StringIO()
    call_command("continuum_health", stdout=out)
    assert "waiting for a concurrency slot" in out.getvalue()


def test_a_backlog_in_the_broker_yields_to_a_higher_priority_task(engine: Runtime) -> None:
    low = _task(engine, flow.serial_run, "low", 1)
    high = _task(engine, flow.serial_run, "high", 7)  # its message not come yet
    throttled = _claim(engine, low)
    assert isinstance(throttled, Throttled)
    assert [t for t, _, _ in throttled.dispatch.activities] == [high.id]  # granted, sent
    assert (_state(low), _state(high)) == ("slot", "granted")
    assert isinstance(_claim(engine, high), ActivityClaim)
