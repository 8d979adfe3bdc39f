"""Activity task writes: claim an attempt, renew its lease, record how it ended, time it out."""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

from django.db import OperationalError, connections, transaction
from django.db.models import Q
from django.db.models.functions import Now

from ..engine.events import NewEvent
from ..engine.exceptions import LeaseLost, TransactionalActivityError
from ..engine.journal import (
    ETA_HORIZON_SECONDS,
    ActivityClaim,
    Dispatch,
    Eager,
    Speculation,
    Throttled,
    attempt_lost,
    check_attempt,
    expiry_reason,
    lease_task,
    outcome_type,
    seconds_after,
    timeout_error,
)
from ..models import TERMINAL, ActivityTask, FlowState, TaskStatus, WorkflowRun
from . import internals
from .base import LEASED_TASK_FIELDS, activity_claim, past_deadline, to_event
from .lean import AttemptLost, Guarded, Pending
from .runs import FINAL, RunJournal

OPEN_TASKS = [TaskStatus.SCHEDULED, TaskStatus.RUNNING]

# A transactional attempt's transaction is tried this many times when the database aborts
# it as a serialization failure or a deadlock (their SQLSTATEs): the whole of it, body too.
TRANSACTION_TRIES = 5
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})

logger = logging.getLogger("continuum")


def booked_message(task: ActivityTask, now: dt.datetime) -> Dispatch:
    """The ETA message of a task booked for ``task.next_attempt_at``: none when that is
    beyond the horizon of ETA messages (a broker holds them badly for long); the sweep
    sends it once it is due."""
    if (task.next_attempt_at - now).total_seconds() > ETA_HORIZON_SECONDS:
        return Dispatch()
    return Dispatch(activities=[(task.id, task.queue, task.next_attempt_at)])


class _RunChanged(Exception):
    """The run changed since the speculation's basis: its transaction wrote nothing."""


class ActivityJournal(RunJournal):
    def _lock_task(self, task_id: int) -> tuple[ActivityTask | None, dt.datetime | None]:
        locked = self.sql.lock(ActivityTask, task_id)
        return locked if locked is not None else (None, None)

    def claim_activity(
        self, task_id: int, owner: str, lease_seconds: float
    ) -> ActivityClaim | Throttled | None:
        with self._atomic():
            task, now = self._lock_task(task_id)
            if task is None or now is None:
                return None
            if task.status != TaskStatus.SCHEDULED or task.next_attempt_at > now:
                if task.flow_state == FlowState.RATE and task.status == TaskStatus.SCHEDULED:
                    # Its ETA message came early (the worker's clock): send it again for then.
                    return Throttled("rate", booked_message(task, now))
                return None
            if task.schedule_deadline is not None and task.schedule_deadline <= now:
                return None
            if task.flow is not None:
                throttled = self.admit(task, now)
                if throttled is not None:
                    return throttled
            lease_task(task, owner, lease_seconds, now)
            fields = (
                LEASED_TASK_FIELDS if task.flow is None else [*LEASED_TASK_FIELDS, "flow_state"]
            )
            self.sql.update(task, fields)
            return activity_claim(task)

    def admit(self, task: ActivityTask, now: dt.datetime) -> Throttled | None:
        """Flow control of a task with limits, at its claim (see `journal.flow.FlowJournal`,
        which enforces them): None lets the attempt start."""
        return None

    def renew_activity(
        self,
        claim: ActivityClaim,
        lease_seconds: float,
        details: Any = None,
        heartbeat: bool = False,
    ) -> bool:
        with self._atomic():
            task, now = self._lock_task(claim.task_id)
            task = check_attempt(task, claim, now or dt.datetime.max)
            assert now is not None
            task.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
            fields = ["lease_expires_at"]
            if heartbeat:
                task.heartbeat_details = details
                task.heartbeat_at = now
                task.heartbeat_deadline = seconds_after(now, task.heartbeat_timeout)
                fields += ["heartbeat_details", "heartbeat_at", "heartbeat_deadline"]
            self.sql.update(task, fields)
            return task.cancel_requested

    def finish_activity(
        self,
        claim: ActivityClaim,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        retry_delay: float | None = None,
        eager: Eager | None = None,
        then: Speculation | None = None,
    ) -> Dispatch:
        then = then if error is None else None
        if then is not None and self._foldable(then.claim, then.activation):
            try:
                return self._finish_folded(claim, result, then)
            except _RunChanged:
                then = None  # nothing written: the result alone, the usual way
        with self._atomic():
            if then is not None and then.activation.outcome in FINAL and then.claim.parent_run_id:
                self._lock_run(then.claim.parent_run_id)  # parent before child: it hears the end
            run, now = self._lock_run(claim.run_id)
            free = run.lease_expires_at is None or run.lease_expires_at <= now
            late = past_deadline(run, now)  # the sweep ends it; it advances no more
            chain = eager if eager and free and not run.park_reason and not late else None
            if error is None and run.status not in TERMINAL:
                self._complete_attempt(claim, result, now)
                new = self._result(claim, result)
                if then is not None and self._holds(run, then, now):
                    return self._advance_with(run, new, then, now)
                dispatch = self._journal_outcome(run, new, now, bool(chain))
            else:
                task, _ = self._lock_task(claim.task_id)
                task = check_attempt(task, claim, now)
                dispatch = self._end_attempt(
                    run, task, now, result, error, retry_delay, bool(chain)
                )
            return self._chain_run(run, chain, now, dispatch)

    def _chain_run(
        self, run: WorkflowRun, chain: Eager | None, now: dt.datetime, dispatch: Dispatch
    ) -> Dispatch:
        if chain and (str(run.id), None) in dispatch.runs:
            # Advance the run right here: this worker takes its lease in this transaction
            # (one UPDATE of the run carries both the wake-up and the lease).
            dispatch.runs.remove((str(run.id), None))
            dispatch.eager_run = self._lease_run(
                run, chain.owner, chain.lease_seconds, now, dispatch.appended
            )
        return dispatch

    def finish_in_transaction(
        self,
        claim: ActivityClaim,
        body: Callable[[], Any],
        *,
        using: str | None = None,
        eager: Eager | None = None,
    ) -> Dispatch | None:
        if using is not None and using != self.using:
            raise TransactionalActivityError(
                f"activity {claim.activity!r} is transactional on database {using!r}, but the "
                f"journal is on {self.using!r} (CONTINUUM['DATABASE']): its writes could not "
                "commit in the transaction that journals its result. Write to the journal's "
                "database, or make it an ordinary activity that uses its idempotency key",
                activity=claim.activity,
                using=using,
                journal=self.using,
            )
        # Inside a caller's transaction a failed statement aborts that transaction: no retry.
        tries = 1 if not transaction.get_autocommit(using=self.using) else TRANSACTION_TRIES
        for attempt in range(1, tries + 1):
            try:
                return self._finish_atomically(claim, body, eager)
            except OperationalError as exc:
                sqlstate = getattr(exc.__cause__, "sqlstate", None)
                if attempt == tries or sqlstate not in RETRYABLE_SQLSTATES:
                    raise
                logger.info(
                    "transactional activity task %s: the database aborted its transaction "
                    "(SQLSTATE %s); running it again (%d of %d)",
                    claim.task_id,
                    sqlstate,
                    attempt + 1,
                    tries,
                )
                time.sleep(random.uniform(0, 0.01 * 2**attempt))  # apart from its rival
        raise AssertionError("unreachable")

    def _finish_atomically(
        self, claim: ActivityClaim, body: Callable[[], Any], eager: Eager | None
    ) -> Dispatch | None:
        """One try of `finish_in_transaction`: the run's and the task's rows stay locked
        from the lease check to the commit, so no other writer can come between."""
        with self._atomic():
            run, now = self._lock_run(claim.run_id)
            task, _ = self._lock_task(claim.task_id)
            task = check_attempt(task, claim, now)
            if run.status in TERMINAL:
                self._end_attempt(run, task, now, None, None, None)  # cancels the task
                return None
            result = body()
            run, now = self._lock_run(claim.run_id)  # already ours: for the clock after the body
            if task.attempt_deadline is not None and task.attempt_deadline <= now:
                raise attempt_lost(claim)  # too late: rolled back; the sweeper times it out
            free = run.lease_expires_at is None or run.lease_expires_at <= now
            chain = eager if eager and free and not run.park_reason else None
            dispatch = self._end_attempt(run, task, now, result, None, None, bool(chain))
            return self._chain_run(run, chain, now, dispatch)

    def _finish_folded(self, claim: ActivityClaim, result: Any, then: Speculation) -> Dispatch:
        """Write the attempt's result and the speculated activation in one transaction whose
        first statement writes the run's row, if the run is as the speculation assumed
        (raises `_RunChanged`, nothing written, if not). One statement where `_single`
        allows (`_finish_in_one`); otherwise pipelined: the run's and the attempt's UPDATEs
        travel together, then the INSERTs, then the COMMIT."""
        if self._single(then.claim, then.activation):
            return self._finish_in_one(claim, result, then)
        with self.sql.transaction():
            # The run's row first (it locks it), then the attempt's: the usual order.
            last_seq = len(then.claim.history) - 1
            sent = self._send_write_run(
                then.claim, then.activation, last_seq, then.claim.revision, True
            )
            completed = self._send_complete_attempt(claim, result)
            written = self._written(sent, last_seq)
            if written is None:
                raise _RunChanged(claim.run_id)  # rolls back the attempt's UPDATE too
            if completed.fetch() is None:
                check_attempt(None, claim, written[1])  # raises LeaseLost
            run, now = written
            return self._advance_with(run, self._result(claim, result), then, now, True)

    def _finish_in_one(self, claim: ActivityClaim, result: Any, then: Speculation) -> Dispatch:
        """`_finish_folded` as one statement (see `_single`): the run's UPDATE, the
        attempt's, the result's and the activation's events and the tasks it schedules."""
        try:
            dispatch = self._in_one(
                then.claim,
                then.activation,
                then.eager,
                self._result(claim, result),
                self._attempt_write(claim, result),
            )
        except AttemptLost as lost:
            raise attempt_lost(claim) from lost
        if dispatch is None:
            raise _RunChanged(claim.run_id)
        dispatch.advanced = then.activation.outcome
        return dispatch

    def _holds(self, run: WorkflowRun, then: Speculation, now: dt.datetime) -> bool:
        """Whether the run is as the speculation assumed: unchanged since its last activation
        (a signal delivered since would have changed its revision), and the history one
        event short of the speculated one."""
        return self._unchanged(run, then.claim, now) and len(then.claim.history) == run.last_seq + 1

    @staticmethod
    def _result(claim: ActivityClaim, result: Any) -> NewEvent:
        """The event that journals the attempt's result."""
        return NewEvent(
            type=outcome_type(claim.kind, failed=False),
            command_id=claim.command_id,
            payload={"result": result},
        )

    def _advance_with(
        self,
        run: WorkflowRun,
        result: NewEvent,
        then: Speculation,
        now: dt.datetime,
        written: bool = False,
    ) -> Dispatch:
        """Append the result and the speculated activation in one INSERT, then apply it
        (``written``: the run's row already holds what the activation leaves)."""
        done = self._rows(run, [result], now)
        made = self._rows(run, then.activation.events, then.claim.now)
        self._insert_events([*done, *made])
        if not written:
            run.revision += 1  # the result woke the run (the activation ends that wake-up)
        known = then.claim.history[:-1]
        dispatch = self._apply(
            run,
            then.claim,
            then.activation,
            known,
            [*done, *made],
            made,
            now,
            then.eager,
            written,
        )
        dispatch.advanced = then.activation.outcome
        return dispatch

    def _complete_attempt(self, claim: ActivityClaim, result: Any, now: dt.datetime) -> None:
        """Record the attempt's result if it still holds its lease (the rule of
        `check_attempt`), in one guarded UPDATE instead of reading the row first."""
        if self._send_complete_attempt(claim, result).fetch() is None:
            check_attempt(None, claim, now)  # raises LeaseLost

    def _send_complete_attempt(self, claim: ActivityClaim, result: Any) -> Pending[ActivityTask]:
        """`_complete_attempt`'s UPDATE, read later: it matches nothing when the attempt no
        longer holds its lease at the transaction's clock."""
        update = self._attempt_write(claim, result)
        return self.sql.update_returning(
            update.instance, update.attnames, update.guard, update.guard_params, ["id"]
        )

    def _attempt_write(self, claim: ActivityClaim, result: Any) -> Guarded[ActivityTask]:
        """The UPDATE that records the attempt's result, guarded by its lease."""
        task = self.sql.partial(
            ActivityTask,
            id=claim.task_id,
            status=TaskStatus.COMPLETED,
            result=result,
            lease_owner="",
            lease_expires_at=None,
        )
        return Guarded(
            task,
            ["status", "result", "lease_owner", "lease_expires_at", "updated_at"],
            self._attempt_guard,
            [("status", TaskStatus.RUNNING), ("lease_token", claim.token)],
        )

    @cached_property
    def _attempt_guard(self) -> str:
        """`_attempt_write`'s guard: the attempt still holds the task's lease, in time."""
        quote = internals.quoter(connections[self.using])
        return (
            f"{quote('status')} = %s AND {quote('lease_token')} = %s"
            f" AND {quote('lease_expires_at')} > {{now}}"
            f" AND ({quote('attempt_deadline')} IS NULL OR {quote('attempt_deadline')} > {{now}})"
        )

    def _end_attempt(
        self,
        run: WorkflowRun,
        task: ActivityTask,
        now: dt.datetime,
        result: Any,
        error: dict[str, Any] | None,
        retry_delay: float | None,
        defer_wake: bool = False,
    ) -> Dispatch:
        dispatch = Dispatch()
        task.lease_owner = ""
        task.lease_expires_at = None
        fields = ["status", "lease_owner", "lease_expires_at", "lease_token", "updated_at"]
        if run.status in TERMINAL:
            # Kept on the task for operators; the finished run's history takes nothing more.
            task.status = TaskStatus.CANCELLED
            task.result, task.error = result, error
            self.sql.update(task, [*fields, "result", "error"])
            return dispatch
        if error is None:
            task.status = TaskStatus.COMPLETED
            task.result = result
            fields.append("result")
            new = NewEvent(
                type=outcome_type(task.kind, failed=False),
                command_id=task.command_id,
                payload={"result": result},
            )
        else:
            task.error = error
            fields.append("error")
            retry_at = seconds_after(now, retry_delay)
            if retry_at is not None and (
                task.schedule_deadline is None or retry_at < task.schedule_deadline
            ):
                task.status = TaskStatus.SCHEDULED
                task.next_attempt_at = retry_at
                self.sql.update(task, [*fields, "next_attempt_at"])
                dispatch.activities.append((task.id, task.queue, retry_at))
                return dispatch
            task.status = TaskStatus.FAILED
            new = NewEvent(
                type=outcome_type(task.kind, failed=True),
                command_id=task.command_id,
                payload={"error": error, "attempts": task.attempt},
            )
        self.sql.update(task, fields)
        return self._journal_outcome(run, new, now, defer_wake, dispatch)

    def _journal_outcome(
        self,
        run: WorkflowRun,
        new: NewEvent,
        now: dt.datetime,
        defer_wake: bool,
        dispatch: Dispatch | None = None,
    ) -> Dispatch:
        """Append the event that says how a task ended, and wake the run."""
        dispatch = Dispatch() if dispatch is None else dispatch
        rows = self._append(run, [new], now)
        self._remember(str(run.id), rows)
        dispatch.appended = [to_event(row) for row in rows]
        if not defer_wake:
            self.sql.update(run, self._wake(run, now, dispatch))
        else:
            self._wake(run, now, dispatch)  # the caller saves the run once, with its lease
        return dispatch

    def expired_activities(self, limit: int) -> list[ActivityClaim]:
        now = Now()
        running_late = Q(status=TaskStatus.RUNNING) & (
            Q(attempt_deadline__lte=now)
            | Q(heartbeat_deadline__lte=now)
            | Q(lease_expires_at__lte=now)
        )
        tasks = (
            ActivityTask.objects.using(self.using)
            .annotate(db_now=Now())
            .filter(running_late | Q(status__in=OPEN_TASKS, schedule_deadline__lte=now))
            .order_by("id")[:limit]
        )
        return [activity_claim(t, expiry_reason(t, t.db_now)) for t in tasks]

    def time_out_activity(self, claim: ActivityClaim, retry_delay: float | None) -> Dispatch:
        with self._atomic():
            run, now = self._lock_run(claim.run_id)
            task, _ = self._lock_task(claim.task_id)
            reason = expiry_reason(task, now) if task else ""
            if (
                task is None
                or task.lease_token != claim.token
                or task.status not in OPEN_TASKS
                or not reason
            ):
                raise LeaseLost(f"activity task {claim.task_id} changed since it expired")
            task.lease_token += 1
            delay = None if reason == "schedule_to_close" else retry_delay
            return self._end_attempt(
                run, task, now, None, timeout_error(reason, task.attempt), delay
            )

    def due_activities(self, limit: int, grace_seconds: float) -> Dispatch:
        with self._atomic():
            tasks = list(
                ActivityTask.objects.using(self.using)
                .select_for_update(skip_locked=True)
                .filter(
                    status=TaskStatus.SCHEDULED,
                    next_attempt_at__lte=Now() - dt.timedelta(seconds=grace_seconds),
                )
                .exclude(flow_state=FlowState.SLOT)  # woken by a hand-off, not by the clock
                .values_list("id", "queue")[:limit]
            )
            ActivityTask.objects.using(self.using).filter(pk__in=[t[0] for t in tasks]).update(
                next_attempt_at=Now()
            )
        return Dispatch(activities=[(task_id, queue, None) for task_id, queue in tasks])
