"""Cancellation meets continue_as_new, late activations and cleanups: the regressions of
issue 14 (a run stuck forever, bodies run after a cancel, a cancel ignored, orphaned children)."""

from __future__ import annotations

from tests.testapp import reliability as rl

from .conftest import Harness


def _tip(harness: Harness, run_id: str) -> str:
    while (last := harness.journal.history(run_id)[-1]).type == "run_continued":
        run_id = last.payload["next_run_id"]
    return run_id


def _after_cancel(harness: Harness, run_id: str) -> list[str]:
    types = harness.types(run_id)
    return types[types.index("cancel_requested") + 1 :]


def _step(harness: Harness) -> None:
    """Deliver exactly the pending hints of one kind: the run's advance, or its activity."""
    if harness.sent.runs:
        harness.runtime.advance_run(harness.sent.runs.pop(0))
    else:
        harness.runtime.execute_activity(harness.sent.activities.pop(0))


def test_a_cancel_pending_when_the_code_continues_as_new_ends_the_run_cancelled(
    harness: Harness,
) -> None:
    run = harness.start(rl.ticker, 1)
    harness.drain()  # asleep on its timer
    harness.make_timers_due(run)
    harness.sent.send(harness.journal.fire_due_timers(10))  # timer fired, not yet advanced
    harness.sent.send(harness.journal.request_cancel(run, "stop ticking", terminate=False))
    harness.drain()
    assert harness.run(run)["status"] == "cancelled"
    assert _tip(harness, run) == run  # no successor was started
    assert _after_cancel(harness, run) == ["run_cancelled"]


def test_a_cancel_before_an_activation_schedules_no_activity(harness: Harness) -> None:
    run = harness.start(rl.two_steps)
    _step(harness)  # schedules record("first")
    _step(harness)  # runs it: its result wakes the run
    harness.sent.send(harness.journal.request_cancel(run, "too late", terminate=False))
    harness.drain()
    assert harness.run(run)["status"] == "cancelled"
    assert _after_cancel(harness, run) == ["run_cancelled"]
    assert len(harness.task_ids(run)) == 1  # record("second") never got a task


def test_a_cancel_before_an_activation_schedules_no_timer(harness: Harness) -> None:
    run = harness.start(rl.sleep_then_timer)
    _step(harness)
    _step(harness)
    harness.sent.send(harness.journal.request_cancel(run, "no sleeping", terminate=False))
    harness.drain()
    assert harness.run(run)["status"] == "cancelled"
    assert _after_cancel(harness, run) == ["run_cancelled"]


def test_a_run_that_never_waits_again_after_a_cancel_ends_cancelled(harness: Harness) -> None:
    run = harness.start(rl.never_waits_again)
    _step(harness)
    _step(harness)
    harness.sent.send(harness.journal.request_cancel(run, "changed my mind", terminate=False))
    harness.drain()
    row = harness.run(run)
    assert row["status"] == "cancelled"
    assert row["result"] is None
    assert harness.types(run)[-1] == "run_cancelled"


def test_a_cleanup_that_raises_still_ends_the_run_cancelled_with_its_error(
    harness: Harness,
) -> None:
    run = harness.start(rl.cleanup_raises)
    harness.drain()
    harness.sent.send(harness.journal.request_cancel(run, "stop", terminate=False))
    harness.drain()
    row = harness.run(run)
    assert row["status"] == "cancelled"
    ended = harness.journal.history(run)[-1]
    assert ended.type == "run_cancelled"
    assert ended.payload["reason"] == "stop"
    assert ended.payload["cleanup_error"]["type"] == "builtins.RuntimeError"
    assert "cleanup went wrong" in ended.payload["cleanup_error"]["message"]
    assert row["error"]["message"] == ended.payload["cleanup_error"]["message"]


def test_cleanup_in_response_to_a_cancel_still_runs(harness: Harness) -> None:
    run = harness.start(rl.cleanup_runs)
    harness.drain()
    harness.sent.send(harness.journal.request_cancel(run, "stop", terminate=False))
    harness.drain()
    assert harness.run(run)["status"] == "cancelled"
    assert _after_cancel(harness, run) == [
        "activity_scheduled",
        "activity_completed",
        "run_cancelled",
    ]


def test_children_of_an_earlier_incarnation_follow_the_chain_and_hear_its_cancel(
    harness: Harness,
) -> None:
    root = harness.start(rl.parent_continues, 1)
    harness.drain()
    tip = _tip(harness, root)
    assert tip != root
    child = next(e.payload["run_id"] for e in harness.journal.history(root) if e.command_id)
    assert str(harness.run(child)["parent_run_id"]) == tip
    harness.sent.send(harness.journal.request_cancel(root, "shut down", terminate=False))
    harness.drain()
    assert harness.run(tip)["status"] == "cancelled"
    assert harness.run(child)["status"] == "cancelled"


def test_the_end_of_a_child_of_an_earlier_incarnation_is_journaled_on_the_tip(
    harness: Harness,
) -> None:
    root = harness.start(rl.parent_continues, 1)
    harness.drain()
    tip = _tip(harness, root)
    child = next(e.payload["run_id"] for e in harness.journal.history(root) if e.command_id)
    harness.make_timers_due(child)
    harness.sent.send(harness.journal.fire_due_timers(10))
    harness.drain()
    assert harness.run(child)["status"] == "completed"
    ended = [e for e in harness.journal.history(tip) if e.type == "child_completed"]
    assert [e.payload["run_id"] for e in ended] == [child]
    assert ended[0].command_id == ""  # not an outcome of any command of the successor
    harness.sent.send(harness.journal.deliver_signal(tip, "finish", "ok", None))
    harness.drain()
    assert harness.run(tip)["status"] == "completed"
    assert harness.run(tip)["result"] == "ok"
