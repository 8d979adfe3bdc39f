"""Run deadlines on both journals: the sweep ends a late run, once, with its children."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from continuum_django.engine.journal import TIMED_OUT
from continuum_django.engine.memory import MemoryJournal
from tests.testapp import deadlines as dl

from .conftest import Harness, MemoryHarness


def pass_deadline(harness: Harness, run_id: str) -> None:
    """Move the run's deadline a second into the past, on the journal's own clock."""
    if isinstance(harness, MemoryHarness):
        run = harness.memory.runs[run_id]
        run.deadline = harness.clock.now() - dt.timedelta(seconds=1)
        return
    from django.db.models.functions import Now

    from continuum_django.models import WorkflowRun

    WorkflowRun.objects.filter(pk=run_id).update(deadline=Now() - dt.timedelta(seconds=1))


def deadline_of(harness: Harness, run_id: str) -> Any:
    return harness.run(run_id)["deadline"]


def children_of(harness: Harness, run_id: str) -> list[str]:
    if isinstance(harness.journal, MemoryJournal):
        runs = harness.journal.runs.values()
        return [r.id for r in runs if r.parent_run_id == run_id]
    from continuum_django.models import WorkflowRun

    children = WorkflowRun.objects.filter(parent_run_id=run_id)
    return [str(pk) for pk in children.values_list("pk", flat=True)]


def timers_open(harness: Harness, run_id: str) -> int:
    if isinstance(harness.journal, MemoryJournal):
        timers = harness.journal.timers.values()
        return sum(1 for t in timers if t.run_id == run_id and not (t.fired or t.cancelled))
    from continuum_django.models import Timer

    return Timer.objects.filter(run_id=run_id, fired=False, cancelled=False).count()


def test_a_run_past_its_deadline_ends_failed_timed_out(harness: Harness) -> None:
    run = harness.start(dl.sleeper, 3600, timeout=60)
    harness.drain()
    assert harness.run(run)["status"] == "suspended"
    assert harness.runtime.sweep()["runs_timed_out"] == 0  # not late yet

    pass_deadline(harness, run)
    assert harness.runtime.sweep()["runs_timed_out"] == 1
    harness.drain()

    row = harness.run(run)
    assert row["status"] == "failed"
    assert row["error"]["type"] == TIMED_OUT
    assert row["error"]["deadline"] == deadline_of(harness, run).isoformat()
    assert harness.types(run)[-2:] == ["run_timed_out", "run_failed"]
    timed_out = harness.journal.history(run)[-2]
    assert timed_out.payload["deadline"] == row["error"]["deadline"]
    assert timers_open(harness, run) == 0  # its timer is void: nothing runs after the end
    assert harness.runtime.sweep()["runs_timed_out"] == 0  # exactly once


def test_the_deadline_is_the_timeout_after_the_start(harness: Harness) -> None:
    run = harness.start(dl.sleeper, 3600, timeout=dt.timedelta(minutes=5))
    started = harness.journal.history(run)[0]
    assert started.payload["timeout"] == 300.0
    deadline = deadline_of(harness, run)
    assert started.created_at is not None
    assert abs((deadline - started.created_at).total_seconds() - 300) < 5


def test_a_run_without_a_timeout_has_no_deadline(harness: Harness) -> None:
    run = harness.start(dl.sleeper, 3600)
    assert deadline_of(harness, run) is None
    assert "timeout" not in harness.journal.history(run)[0].payload


def test_a_run_finished_before_its_deadline_is_left_alone(harness: Harness) -> None:
    run = harness.start(dl.quick, timeout=60)
    harness.drain()
    pass_deadline(harness, run)
    assert harness.runtime.sweep()["runs_timed_out"] == 0
    assert harness.run(run)["status"] == "completed"
    assert "run_timed_out" not in harness.types(run)


def test_a_late_run_is_not_advanced_any_more(harness: Harness) -> None:
    run = harness.start(dl.sleeper, 3600, timeout=60)
    pass_deadline(harness, run)  # before its first advance
    harness.drain()  # the advance message finds it past its deadline: it does nothing
    assert harness.types(run) == ["run_started"]
    harness.runtime.sweep()
    assert harness.types(run) == ["run_started", "run_timed_out", "run_failed"]


def test_its_live_children_are_terminated_and_heard(harness: Harness) -> None:
    run = harness.start(dl.parent, 3600, timeout=60)
    harness.drain()
    (child,) = children_of(harness, run)
    assert harness.run(child)["status"] == "suspended"

    pass_deadline(harness, run)
    harness.runtime.sweep()
    harness.drain()

    assert harness.run(child)["status"] == "cancelled"
    ended = harness.journal.history(child)[-1]
    assert ended.type == "run_cancelled" and ended.payload["terminated"] is True
    assert ended.payload["reason"] == f"the parent run {run} timed out"
    assert timers_open(harness, child) == 0
    # The parent heard its child end before it ended itself.
    assert harness.types(run)[-3:] == ["child_cancelled", "run_timed_out", "run_failed"]
    assert harness.run(run)["status"] == "failed"


def test_a_child_with_a_deadline_of_its_own_fails_in_its_parent(harness: Harness) -> None:
    run = harness.start(dl.parent_of_late_child, 30)
    harness.drain()
    (child,) = children_of(harness, run)
    assert harness.journal.history(child)[0].payload["timeout"] == 30
    assert deadline_of(harness, child) is not None

    pass_deadline(harness, child)
    harness.runtime.sweep()
    harness.drain()

    assert harness.run(child)["status"] == "failed"
    assert harness.run(run)["status"] == "completed"
    assert harness.run(run)["result"] == f"child ended: {TIMED_OUT}"


def test_successors_keep_the_deadline_of_the_chain(harness: Harness) -> None:
    first = harness.start(dl.chain, 0, timeout=60)
    harness.drain()
    chain = [first]
    while (nxt := harness.journal.history(chain[-1])[-1]).type == "run_continued":
        chain.append(nxt.payload["next_run_id"])
    assert len(chain) == 3
    assert {deadline_of(harness, r) for r in chain} == {deadline_of(harness, first)}

    pass_deadline(harness, chain[-1])
    harness.runtime.sweep()
    assert harness.run(chain[-1])["status"] == "failed"
    assert harness.run(first)["status"] == "continued"


def test_open_activity_work_is_made_void(harness: Harness) -> None:
    run = harness.start(dl.busy, timeout=60)
    harness.runtime.advance_run(harness.sent.runs.pop(0))  # schedules the activity only
    pass_deadline(harness, run)
    harness.runtime.sweep()
    harness.drain()  # the task's message arrives after the end: it must not run
    assert harness.run(run)["status"] == "failed"
    assert "activity_completed" not in harness.types(run)


@pytest.mark.parametrize("bad", [0, -5, "soon", float("nan"), dt.timedelta(days=-1), 10**12])
def test_a_bad_timeout_is_refused_before_anything_is_stored(harness: Harness, bad: Any) -> None:
    from continuum_django import ContinuumError, InvalidTimeout

    with pytest.raises(InvalidTimeout, match="timeout") as refused:
        harness.start(dl.sleeper, 1, timeout=bad)
    assert isinstance(refused.value, ContinuumError) and isinstance(refused.value, ValueError)


def test_a_late_run_is_not_chained_on_by_its_activitys_worker(harness: Harness) -> None:
    run = harness.start(dl.busy, timeout=60)
    harness.runtime.advance_run(harness.sent.runs.pop(0))  # schedules the activity
    (task_id,) = harness.task_ids(run)
    harness.sent.activities.clear()
    pass_deadline(harness, run)
    # A worker that would advance the run itself after the result (eager steps) does not:
    # the result is journaled, but the run's code does not go on past its deadline.
    harness.make_runtime("worker-b", eager_steps=5).execute_activity(task_id)
    harness.drain()
    assert harness.types(run)[-1] == "activity_completed"
    assert harness.run(run)["status"] != "completed"
    harness.runtime.sweep()
    assert harness.types(run)[-2:] == ["run_timed_out", "run_failed"]
