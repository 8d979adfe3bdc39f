"""Operator actions: retry a parked or failed run, release the runs of a version,
dead-letter a failed activity task.

A parked run is `suspended` with a park reason: the sweep leaves it alone until an
operator (or a worker carrying its version) unparks it. Unparking happens under the
run's row lock, leaves a due wake-up as durable evidence for the sweep, and sends
``advance_run`` once the transaction commits.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models.functions import Now

from .conf import app_settings
from .engine.events import COMMAND_EVENTS, EventType
from .engine.exceptions import ContinuumError, RunNotActive, RunNotFound
from .engine.journal import TIMED_OUT, Dispatch
from .models import (
    TERMINAL,
    ActivityTask,
    ParkReason,
    RunStatus,
    TaskStatus,
    WorkflowEvent,
    WorkflowRun,
)
from .worker import runtime

logger = logging.getLogger("continuum")


class RunNotParked(ContinuumError):
    """The run is not parked, so there is nothing to retry."""


def _unpark(run: WorkflowRun, dispatch: Dispatch) -> None:
    run.park_reason = ParkReason.NONE
    run.park_detail = ""
    run.next_wakeup_at = Now()
    run.revision += 1
    run.save(update_fields=["park_reason", "park_detail", "next_wakeup_at", "revision"])
    dispatch.runs.append((str(run.id), None))


def retry_run(run_id: Any) -> None:
    """Unpark one parked run (drift or unknown version) so that a worker replays it again.

    Raises `RunNotFound`, `RunNotActive` for a finished run, `RunNotParked` otherwise.
    """
    using = app_settings().DATABASE
    dispatch = Dispatch()
    engine = runtime()
    with transaction.atomic(using=using):
        run = WorkflowRun.objects.using(using).select_for_update().filter(pk=run_id).first()
        if run is None:
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        if run.status in TERMINAL:
            raise RunNotActive(
                f"run {run.id} is {run.status}; only a live parked run can be retried",
                run_id=str(run.id),
                status=run.status,
            )
        if not run.park_reason:
            raise RunNotParked(
                f"run {run.id} is not parked (it is {run.status}); nothing to retry",
                run_id=str(run.id),
            )
        _unpark(run, dispatch)
        engine.dispatcher.send(dispatch)


def release_version(name: str, version: int | None = None) -> int:
    """Unpark the runs of workflow ``name`` (at ``version``, or any) parked on an unknown
    version, so that workers carrying it pick them up. Returns how many were released."""
    from .versions import release

    return len(release(name, version, by="an operator in the admin"))


class RunNotRetryable(ContinuumError):
    """The run cannot be retried as asked: it is not failed or parked, or not at an activity."""


class RunChanged(ContinuumError):
    """The run changed since the operator decided to act on it (its revision moved)."""


class TaskNotFailed(ContinuumError):
    """Only a failed activity task can be dead-lettered."""


def _operator(operator: str) -> str:
    if not isinstance(operator, str) or not operator.strip():
        raise ValueError("an operator action needs the operator's name (operator='...')")
    return operator.strip()


def retry(run_id: Any, *, operator: str, reason: str = "", revision: int | None = None) -> str:
    """Retry a run, as an operator: a parked run is unparked (as `retry_run` does), and a
    ``failed`` run is reopened at its failed activity with a fresh attempt budget.

    Reopening journals ``activity_retry_scheduled`` (operator and reason in its payload)
    for the activity whose failure ended the run, schedules the activity's task again
    (attempt count back to zero; the same task, so its idempotency key is unchanged), and
    leaves the run ``suspended``: replay then waits for the retry's outcome instead of the
    failure. With ``revision`` (the run's revision the operator saw), nothing is done if
    the run has changed since (`RunChanged`). Returns ``"unparked"`` or ``"reopened"``.

    Raises `RunNotFound`, `RunChanged`, `ValueError` without an operator, and
    `RunNotRetryable` for a run that is neither parked nor failed, a child run (retry its
    parent: the parent already heard of the failure), or a run that failed in its own code
    rather than in an activity.
    """
    operator = _operator(operator)
    using = app_settings().DATABASE
    dispatch = Dispatch()
    with transaction.atomic(using=using):
        run = WorkflowRun.objects.using(using).select_for_update().filter(pk=run_id).first()
        if run is None:
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        if revision is not None and run.revision != revision:
            raise RunChanged(
                f"run {run.id} changed since revision {revision} (it is at {run.revision}, "
                f"{run.status}); look again before retrying it",
                run_id=str(run.id),
            )
        if run.park_reason and run.status not in TERMINAL:
            logger.info("run %s unparked by %s: %s", run.id, operator, reason)
            _unpark(run, dispatch)
            done = "unparked"
        else:
            _reopen(run, operator, reason, dispatch)
            done = "reopened"
        runtime().dispatcher.send(dispatch)
    return done


# Events after an activity's failure that show the code went on past it.
_LATER = [*COMMAND_EVENTS, EventType.SIGNAL_RECEIVED]


def _reopen(run: WorkflowRun, operator: str, reason: str, dispatch: Dispatch) -> None:
    """Reopen the failed, locked ``run`` at the activity whose failure ended it."""
    if run.status != RunStatus.FAILED:
        raise RunNotRetryable(
            f"run {run.id} is {run.status}; only a failed or parked run can be retried",
            run_id=str(run.id),
        )
    error = run.error or {}
    if error.get("type") == TIMED_OUT:
        raise RunNotRetryable(
            f"run {run.id} timed out at its deadline ({error.get('deadline')}); a retry "
            "would end it again at once: start a new run (with a later deadline)",
            run_id=str(run.id),
        )
    if run.parent_run_id:
        raise RunNotRetryable(
            f"run {run.id} is a child of run {run.parent_run_id}, which already heard of its "
            "failure: retry the parent instead",
            run_id=str(run.id),
        )
    using = run._state.db
    events = WorkflowEvent.objects.using(using).filter(run=run)
    failed = events.filter(type=EventType.ACTIVITY_FAILED).order_by("-seq").first()
    task = None
    if failed is not None:
        tasks = ActivityTask.objects.using(using).select_for_update()
        task = tasks.filter(run=run, command_id=failed.command_id).first()
    if failed is not None and events.filter(seq__gt=failed.seq, type__in=_LATER).exists():
        raise RunNotRetryable(
            f"run {run.id}'s code handled the failure of {failed.command_id} and went on before "
            "it failed: retrying that activity would replay differently (drift); fix the code "
            "and start a new run",
            run_id=str(run.id),
        )
    if failed is None or task is None:
        error = run.error or {}
        raise RunNotRetryable(
            f"run {run.id} failed in its own code ({error.get('type')}: "
            f"{error.get('message')}), not in an activity: there is no activity to retry; "
            "fix the code and start a new run",
            run_id=str(run.id),
        )
    payload = {
        "operator": operator,
        "reason": reason,
        "activity": task.activity,
        "previous_attempts": task.attempt,
        "previous_error": task.error,
    }
    run.last_seq += 1
    WorkflowEvent.objects.using(using).create(
        run=run,
        seq=run.last_seq,
        type=EventType.ACTIVITY_RETRY_SCHEDULED,
        command_id=failed.command_id,
        payload=payload,
        created_at=Now(),
    )
    task.status = TaskStatus.SCHEDULED
    task.attempt = 0
    task.next_attempt_at = Now()
    deadline = task.schedule_to_close_timeout
    task.schedule_deadline = None if deadline is None else Now() + timedelta(seconds=deadline)
    task.lease_owner, task.lease_expires_at = "", None
    task.attempt_deadline = task.heartbeat_deadline = None
    task.cancel_requested = False
    task.result = task.error = None
    task.save()
    run.status = RunStatus.SUSPENDED
    run.result = run.error = run.finished_at = None
    run.next_wakeup_at = None
    run.revision += 1
    run.save(
        update_fields=[
            "status", "result", "error", "finished_at", "next_wakeup_at", "revision",
            "last_seq", "updated_at",
        ]
    )  # fmt: skip
    logger.info("run %s reopened at %s by %s: %s", run.id, failed.command_id, operator, reason)
    dispatch.activities.append((task.id, task.queue, None))


def dead_letter(task_id: Any, *, operator: str, reason: str = "") -> None:
    """Mark a failed activity task dead-lettered: it stays in the history but no longer
    counts as work to act on. The operator and reason are kept in the task's error."""
    operator = _operator(operator)
    using = app_settings().DATABASE
    with transaction.atomic(using=using):
        tasks = ActivityTask.objects.using(using).select_for_update()
        task = tasks.filter(pk=task_id).first()
        if task is None or task.status != TaskStatus.FAILED:
            status = task.status if task is not None else "not found"
            raise TaskNotFailed(
                f"activity task {task_id} is {status}; only a failed one can be dead-lettered"
            )
        task.status = TaskStatus.DEAD_LETTERED
        task.error = {
            **(task.error or {}),
            "dead_lettered": {"operator": operator, "reason": reason},
        }
        task.save(update_fields=["status", "error", "updated_at"])
    logger.info("activity task %s dead-lettered by %s: %s", task_id, operator, reason)
