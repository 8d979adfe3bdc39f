"""The journal contract: the same behaviour from the in-memory and the ORM journal."""

from __future__ import annotations

import time

import pytest

from continuum_django.engine.exceptions import LeaseLost, RunNotActive, RunNotFound
from continuum_django.engine.journal import StaleClaim
from continuum_django.engine.replay import advance
from tests.testapp import workflows as wf

from .conftest import LEASE, Harness


def test_three_activity_workflow_completes_with_exact_history(harness: Harness) -> None:
    run_id = harness.start(wf.three_steps, 4)
    harness.drain()

    run = harness.run(run_id)
    assert run["status"] == "completed"
    assert run["result"] == {"value": 10, "text": "value is 10"}
    assert harness.types(run_id) == [
        "run_started",
        "activity_scheduled", "activity_completed",
        "activity_scheduled", "activity_completed",
        "activity_scheduled", "activity_completed",
        "run_completed",
    ]  # fmt: skip
    history = harness.journal.history(run_id)
    assert [e.seq for e in history] == list(range(1, 9))
    assert [e.command_id for e in history if e.type == "activity_scheduled"] == [
        "0:activity:tests.testapp.workflows.add_one",
        "1:activity:tests.testapp.workflows.double",
        "2:activity:tests.testapp.workflows.describe",
    ]


def test_idempotency_key_returns_the_existing_run(harness: Harness) -> None:
    first = harness.start(wf.three_steps, 1, idempotency_key="order-1")
    harness.drain()
    second = harness.start(wf.three_steps, 99, idempotency_key="order-1")
    assert second == first
    assert harness.run(first)["input"]["args"] == [1]
    other_namespace = harness.start(wf.three_steps, 1, idempotency_key="order-1", namespace="b")
    assert other_namespace != first


def test_retries_are_not_journaled_and_exhaustion_reaches_the_workflow(harness: Harness) -> None:
    run_id = harness.start(wf.retrying)
    harness.drain()

    run = harness.run(run_id)
    assert run["status"] == "completed", run
    assert run["result"] == {
        "attempts": 3,
        "handled": {"activity": "tests.testapp.workflows.always_fails", "attempts": 2},
    }
    assert harness.types(run_id) == [
        "run_started",
        "activity_scheduled", "activity_completed",
        "activity_scheduled", "activity_failed",
        "run_completed",
    ]  # fmt: skip


def test_a_retry_whose_delay_has_passed_is_still_run(harness: Harness) -> None:
    """The harness itself: a retry whose short delay (50 ms) passed before the harness
    looked is run, not left for a sweep (on a busy machine this made retry tests flaky)."""
    run_id = harness.start(wf.retrying)
    harness.runtime.advance_run(harness.sent.runs.pop(0))
    harness.runtime.execute_activity(harness.sent.activities.pop(0))  # attempt 1 fails
    harness.sent.activities.clear()  # as if its retry's hint was spent too early
    time.sleep(0.2)  # the delay has passed on every clock
    harness.drain()
    assert harness.run(run_id)["status"] == "completed"


def test_non_retryable_error_fails_the_activity_at_once(harness: Harness) -> None:
    run_id = harness.start(wf.non_retryable)
    harness.drain()
    assert harness.run(run_id)["result"] == "continuum_django.engine.exceptions.NonRetryableError:1"


def test_signal_sent_before_the_wait_is_buffered(harness: Harness) -> None:
    run_id = harness.start(wf.waiter)
    harness.journal.deliver_signal(run_id, "go", "early", None)
    harness.drain()
    assert harness.run(run_id)["result"] == "early"


def test_signal_wins_when_journaled_before_the_timer_fires(harness: Harness) -> None:
    run_id = harness.start(wf.waiter, 3600)
    harness.drain()
    assert harness.run(run_id)["status"] == "suspended"
    harness.sent.send(harness.journal.deliver_signal(run_id, "go", "signalled", None))
    harness.drain()
    harness.make_timers_due(run_id)
    harness.sent.send(harness.journal.fire_due_timers(100))
    harness.drain()
    assert harness.run(run_id)["result"] == "signalled"
    assert "timer_fired" not in harness.types(run_id)


def test_timeout_wins_when_the_timer_fires_first(harness: Harness) -> None:
    run_id = harness.start(wf.waiter, 3600)
    harness.drain()
    harness.make_timers_due(run_id)
    harness.sent.send(harness.journal.fire_due_timers(100))
    # The signal arrives after the timer fired but before the run advanced.
    harness.sent.send(harness.journal.deliver_signal(run_id, "go", "late", None))
    harness.drain()
    assert harness.run(run_id)["result"] == "timed-out"
    assert harness.types(run_id)[-2:] == ["timer_fired", "run_completed"]


def test_dedupe_key_delivers_once(harness: Harness) -> None:
    run_id = harness.start(wf.collector, 2)
    for payload in ("a", "a-again", "b"):
        key = "k-b" if payload == "b" else "k-a"
        harness.sent.send(harness.journal.deliver_signal(run_id, "item", payload, key))
    harness.drain()
    assert harness.run(run_id)["result"] == ["a", "b"]


def test_stale_writer_gets_lease_lost_and_changes_nothing(harness: Harness) -> None:
    """Invariant 1: a writer whose lease was taken over cannot write."""
    run_id = harness.start(wf.three_steps, 1)
    stale = harness.journal.claim_run(run_id, "worker-a", LEASE)
    assert stale is not None
    activation = advance(wf.three_steps, run_id=run_id, history=stale.history, now=stale.now)
    harness.expire_run_lease(run_id)
    fresh = harness.journal.claim_run(run_id, "worker-b", LEASE)
    assert fresh is not None and fresh.token > stale.token

    before = harness.journal.history(run_id)
    with pytest.raises(LeaseLost):
        harness.journal.commit_activation(stale, activation)
    with pytest.raises(LeaseLost):
        harness.journal.park_run(stale, "drift", "stale")
    assert harness.journal.history(run_id) == before
    assert harness.run(run_id)["park_reason"] == ""
    harness.journal.commit_activation(fresh, activation)
    assert harness.types(run_id) == ["run_started", "activity_scheduled"]


def test_zombie_attempt_result_is_discarded(harness: Harness) -> None:
    """Invariant 3: only the attempt holding the task's current lease may record a result."""
    run_id = harness.start(wf.three_steps, 1)
    harness.runtime.advance_run(harness.sent.runs.pop())
    task_id = harness.sent.activities.pop()
    zombie = harness.journal.claim_activity(task_id, "worker-a", LEASE)
    assert zombie is not None

    harness.expire_task_leases(run_id)
    assert harness.runtime.sweep()["attempts_timed_out"] == 1
    harness.make_retries_due()
    second = harness.journal.claim_activity(task_id, "worker-b", LEASE)
    assert second is not None and second.attempt == 2

    with pytest.raises(LeaseLost):
        harness.journal.finish_activity(zombie, result=1000)
    harness.journal.finish_activity(second, result=2)
    history = harness.journal.history(run_id)
    completed = [e for e in history if e.type == "activity_completed"]
    assert [e.payload for e in completed] == [{"result": 2}]


def test_wake_during_an_advance_is_not_lost(harness: Harness) -> None:
    """Invariant 4: a signal that lands while a worker holds the lease reaches the run."""
    run_id = harness.start(wf.waiter)
    claim = harness.journal.claim_run(run_id, "worker-a", LEASE)
    assert claim is not None
    activation = advance(wf.waiter, run_id=run_id, history=claim.history, now=claim.now)
    assert activation.outcome == "suspended"

    # Another worker gets the wake-up while worker-a holds the lease: it cannot claim.
    harness.journal.deliver_signal(run_id, "go", "during", None)
    assert harness.journal.claim_run(run_id, "worker-b", LEASE) is None
    with pytest.raises(StaleClaim):
        harness.journal.commit_activation(claim, activation)

    # The runtime's answer to StaleClaim: reload under the same lease and decide again.
    claim = harness.journal.refresh_claim(claim, LEASE)
    activation = advance(
        wf.waiter, run_id=run_id, history=claim.history, mailbox=claim.mailbox, now=claim.now
    )
    harness.journal.commit_activation(claim, activation)
    assert harness.run(run_id)["result"] == "during"


def test_lost_message_is_recovered_by_the_sweeper(harness: Harness) -> None:
    """Invariant 9: the durable wake-up time lets the sweeper re-send a lost hint."""
    run_id = harness.start(wf.three_steps, 2)
    harness.sent.runs.clear()  # the broker lost the advance message
    assert harness.runtime.sweep()["runs_redispatched"] == 0  # not overdue yet
    harness.backdate_wakeups(3600)
    assert harness.runtime.sweep()["runs_redispatched"] == 1
    harness.drain()
    assert harness.run(run_id)["status"] == "completed"


def test_lost_activity_message_is_recovered_by_the_sweeper(harness: Harness) -> None:
    run_id = harness.start(wf.three_steps, 2)
    harness.runtime.advance_run(harness.sent.runs.pop())
    harness.sent.activities.clear()
    harness.runtime.redispatch_after = 0
    assert harness.runtime.sweep()["activities_redispatched"] == 1
    harness.drain()
    assert harness.run(run_id)["status"] == "completed"


def test_terminal_states_are_final(harness: Harness) -> None:
    """Invariant 10: nothing moves a finished run or appends to its history."""
    run_id = harness.start(wf.sleeper, 60)
    harness.drain()
    harness.journal.request_cancel(run_id, "stop", terminate=True)
    history = harness.journal.history(run_id)
    assert harness.run(run_id)["status"] == "cancelled"

    with pytest.raises(RunNotActive):
        harness.journal.deliver_signal(run_id, "go", None, None)
    with pytest.raises(RunNotActive):
        harness.journal.request_cancel(run_id, "again", terminate=False)
    assert harness.journal.claim_run(run_id, "worker-b", LEASE) is None
    harness.make_timers_due(run_id)
    harness.journal.fire_due_timers(100)
    harness.backdate_wakeups(3600)
    harness.runtime.sweep()
    harness.drain()
    assert harness.journal.history(run_id) == history
    assert harness.run(run_id)["status"] == "cancelled"


def test_activity_finishing_after_the_run_ended_appends_nothing(harness: Harness) -> None:
    run_id = harness.start(wf.three_steps, 1)
    harness.runtime.advance_run(harness.sent.runs.pop())
    claim = harness.journal.claim_activity(harness.sent.activities.pop(), "worker-a", LEASE)
    assert claim is not None
    harness.journal.request_cancel(run_id, "", terminate=True)
    history = harness.journal.history(run_id)
    assert not harness.journal.finish_activity(claim, result=2)
    assert harness.journal.history(run_id) == history


def test_cancel_is_journaled_and_ends_the_run_cancelled(harness: Harness) -> None:
    run_id = harness.start(wf.sleeper, 3600)
    harness.drain()
    harness.sent.send(harness.journal.request_cancel(run_id, "customer asked", terminate=False))
    harness.journal.request_cancel(run_id, "twice is a no-op", terminate=False)
    harness.drain()
    assert harness.run(run_id)["status"] == "cancelled"
    assert harness.types(run_id) == [
        "run_started", "timer_scheduled", "cancel_requested", "run_cancelled",
    ]  # fmt: skip
    assert harness.journal.history(run_id)[-1].payload == {"reason": "customer asked"}


def test_unknown_run_ids_raise_run_not_found(harness: Harness) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(RunNotFound):
        harness.journal.deliver_signal(missing, "go", None, None)
    with pytest.raises(RunNotFound):
        harness.journal.request_cancel(missing, "", terminate=False)
    with pytest.raises(RunNotFound):
        harness.journal.history(missing)
    assert harness.journal.claim_run(missing, "worker-a", LEASE) is None


def test_timer_wakes_the_run(harness: Harness) -> None:
    run_id = harness.start(wf.sleeper, 2)
    harness.drain()
    assert harness.run(run_id)["status"] == "suspended"
    harness.make_timers_due(run_id)
    harness.sent.send(harness.journal.fire_due_timers(100))
    harness.drain()
    assert harness.run(run_id)["result"] == "woke"
    assert harness.types(run_id) == [
        "run_started", "timer_scheduled", "timer_fired", "run_completed",
    ]  # fmt: skip


def test_eager_steps_chain_a_run_in_process_with_the_same_history(harness: Harness) -> None:
    eager = harness.make_runtime("worker-e", eager_steps=50)
    run_id = harness.start(wf.three_steps, 4)
    assert eager.advance_run(harness.sent.runs.pop()) == "completed"
    assert harness.sent.runs == [] and harness.sent.activities == []  # no message needed
    assert harness.run(run_id)["result"] == {"value": 10, "text": "value is 10"}
    assert harness.types(run_id) == [
        "run_started",
        "activity_scheduled", "activity_completed",
        "activity_scheduled", "activity_completed",
        "activity_scheduled", "activity_completed",
        "run_completed",
    ]  # fmt: skip


def test_eager_budget_hands_the_run_back_to_the_broker(harness: Harness) -> None:
    eager = harness.make_runtime("worker-e", eager_steps=2)
    run_id = harness.start(wf.three_steps, 4)
    eager.advance_run(harness.sent.runs.pop())
    assert harness.run(run_id)["status"] != "completed"
    assert harness.sent.runs or harness.sent.activities  # the rest goes through messages
    harness.drain()
    assert harness.run(run_id)["status"] == "completed"


def test_eager_time_budget_hands_the_run_back_to_the_broker(harness: Harness) -> None:
    """Chaining also stops once `eager_seconds` have passed (here: one per clock reading)."""
    eager = harness.make_runtime("worker-e", eager_steps=50)
    eager.eager_seconds = 2.5
    readings = iter(range(1000))
    eager.monotonic = lambda: float(next(readings))
    run_id = harness.start(wf.three_steps, 4)
    eager.advance_run(harness.sent.runs.pop())
    assert harness.run(run_id)["status"] != "completed"
    assert harness.sent.runs or harness.sent.activities  # the rest goes through messages
    # Clock read at 0 (until 2.5), then before each chained step: at 1 and 2 the next
    # advance runs here; at 3 the attempt already leased here finishes, and the advance
    # it wakes goes to the broker.
    assert harness.types(run_id)[-2:] == ["activity_scheduled", "activity_completed"]
    assert harness.types(run_id).count("activity_completed") == 3
    harness.drain()
    assert harness.run(run_id)["status"] == "completed"


def test_eager_activity_lease_is_fenced_like_any_other(harness: Harness) -> None:
    from continuum_django.engine.journal import Eager

    run_id = harness.start(wf.three_steps, 1)
    claim = harness.journal.claim_run(harness.sent.runs.pop(), "worker-a", LEASE)
    assert claim is not None
    activation = advance(wf.three_steps, run_id=run_id, history=claim.history, now=claim.now)
    dispatch = harness.journal.commit_activation(
        claim, activation, Eager(owner="worker-a", queue="continuum", lease_seconds=LEASE)
    )
    task = dispatch.eager_activity
    assert task is not None and task.attempt == 1 and dispatch.activities == []
    assert harness.journal.claim_activity(task.task_id, "worker-b", LEASE) is None
    harness.expire_task_leases(run_id)
    harness.runtime.sweep()
    with pytest.raises(LeaseLost):
        harness.journal.finish_activity(task, result=2)
