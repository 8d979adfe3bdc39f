"""The runtime around activity bodies: lease renewal, heartbeats, cooperative cancellation."""

from __future__ import annotations

import threading
import time
from typing import Any

from continuum_django import ActivityContext, activity, workflow
from continuum_django.engine.local import LocalRunner

LEASE = 0.3
runner: LocalRunner
renewed = threading.Event()
started = threading.Event()


@activity(name="runtime.long_body")
def long_body(activity_context: ActivityContext) -> int:
    """Lets five lease lengths pass on the runner's clock, one renewal at a time."""
    for _ in range(8):
        runner.clock.advance(LEASE * 0.6)
        renewed.clear()
        assert renewed.wait(10), "the lease was not renewed while the body ran"
    activity_context.heartbeat({"progress": "done"})
    return activity_context.attempt


@workflow(name="runtime.long")
def long_workflow(ctx: Any) -> int:
    return ctx.activity(long_body)


def counting_renewals(journal: Any) -> None:
    original = journal.renew_activity

    def renew(*args: Any, **kwargs: Any) -> bool:
        cancelled = original(*args, **kwargs)
        renewed.set()
        return cancelled

    journal.renew_activity = renew


def test_lease_is_renewed_while_a_long_activity_runs() -> None:
    global runner
    runner = LocalRunner(lease_seconds=LEASE)
    counting_renewals(runner.journal)
    run_id = runner.start(long_workflow)
    runner.run_until_idle(skip_time=False)
    stored = runner.journal.runs[run_id]
    assert stored.status == "completed", stored.error
    assert stored.result == 1  # the first attempt's result: it was never timed out
    (task,) = runner.journal.tasks.values()
    assert task.attempt == 1
    assert task.heartbeat_details == {"progress": "done"}


@activity(name="runtime.until_cancelled")
def until_cancelled(activity_context: ActivityContext) -> str:
    started.set()
    deadline = time.monotonic() + 10
    while not activity_context.is_cancelled():
        assert time.monotonic() < deadline, "the cancel request never reached the activity"
        time.sleep(0.01)
    return "stopped early"


@workflow(name="runtime.cancellable")
def cancellable(ctx: Any) -> str:
    return ctx.activity(until_cancelled)


def test_running_activity_sees_the_cancel_request() -> None:
    local = LocalRunner(lease_seconds=LEASE)
    run_id = local.start(cancellable)
    local.step()  # advance: schedules the activity
    (task_id,) = [target for kind, target, _ in local.dispatcher.pending if kind == "activity"]
    local.dispatcher.pending.clear()
    outcome: list[str] = []
    body = threading.Thread(target=lambda: outcome.append(local.runtime.execute_activity(task_id)))
    body.start()
    assert started.wait(10)
    local.dispatcher.send(local.journal.request_cancel(run_id, "stop", terminate=False))
    body.join(20)
    assert outcome == ["completed"]
    local.run_until_idle(skip_time=False)
    assert local.journal.runs[run_id].status == "cancelled"
    assert local.journal.tasks[task_id].result == "stopped early"
