"""Activity task writes: claim an attempt, renew its lease, record how it ended, time it out."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Q
from django.db.models.functions import Now

from ..engine.events import NewEvent
from ..engine.exceptions import LeaseLost
from ..engine.journal import (
    ActivityClaim,
    Dispatch,
    Eager,
    check_attempt,
    expiry_reason,
    outcome_type,
    seconds_after,
    timeout_error,
)
from ..models import TERMINAL, ActivityTask, TaskStatus, WorkflowRun
from .base import LEASED_TASK_FIELDS, OrmBase, activity_claim, lease_task, to_event

OPEN_TASKS = [TaskStatus.SCHEDULED, TaskStatus.RUNNING]


class ActivityJournal(OrmBase):
    def _lock_task(self, task_id: int) -> tuple[ActivityTask | None, dt.datetime | None]:
        tasks = ActivityTask.objects.using(self.using).select_for_update().annotate(db_now=Now())
        task = tasks.filter(pk=task_id).first()
        return task, (task.db_now if task else None)

    def claim_activity(
        self, task_id: int, owner: str, lease_seconds: float
    ) -> ActivityClaim | None:
        with self._atomic():
            task, now = self._lock_task(task_id)
            if task is None or now is None:
                return None
            if task.status != TaskStatus.SCHEDULED or task.next_attempt_at > now:
                return None
            if task.schedule_deadline is not None and task.schedule_deadline <= now:
                return None
            lease_task(task, owner, lease_seconds, now)
            task.save(update_fields=LEASED_TASK_FIELDS)
            return activity_claim(task)

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
            task.save(update_fields=fields)
            return task.cancel_requested

    def finish_activity(
        self,
        claim: ActivityClaim,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        retry_delay: float | None = None,
        eager: Eager | None = None,
    ) -> Dispatch:
        with self._atomic():
            run, now = self._lock_run(claim.run_id)
            task, _ = self._lock_task(claim.task_id)
            task = check_attempt(task, claim, now)
            free = run.lease_expires_at is None or run.lease_expires_at <= now
            chain = eager if eager and free and not run.park_reason else None
            dispatch = self._end_attempt(run, task, now, result, error, retry_delay, bool(chain))
            if chain and (str(run.id), None) in dispatch.runs:
                # Advance the run right here: this worker takes its lease in this transaction
                # (one UPDATE of the run carries both the wake-up and the lease).
                dispatch.runs.remove((str(run.id), None))
                dispatch.eager_run = self._lease_run(
                    run, chain.owner, chain.lease_seconds, now, dispatch.appended
                )
            return dispatch

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
            task.save(update_fields=[*fields, "result", "error"])
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
                task.save(update_fields=[*fields, "next_attempt_at"])
                dispatch.activities.append((task.id, task.queue, retry_at))
                return dispatch
            task.status = TaskStatus.FAILED
            new = NewEvent(
                type=outcome_type(task.kind, failed=True),
                command_id=task.command_id,
                payload={"error": error, "attempts": task.attempt},
            )
        task.save(update_fields=fields)
        rows = self._append(run, [new], now)
        self._remember(str(run.id), rows)
        dispatch.appended = [to_event(row) for row in rows]
        if not defer_wake:
            run.save(update_fields=self._wake(run, now, dispatch))
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
                .values_list("id", "queue")[:limit]
            )
            ActivityTask.objects.using(self.using).filter(pk__in=[t[0] for t in tasks]).update(
                next_attempt_at=Now()
            )
        return Dispatch(activities=[(task_id, queue, None) for task_id, queue in tasks])
