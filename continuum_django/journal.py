"""The ORM journal: the engine's `Journal` on Django models.

Every write to a run happens in one ``transaction.atomic()`` that locks the run row
(``select_for_update``), checks the writer's lease on the database clock, then writes.
Locks are taken run before task or timer, never the other way round.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Now

from .engine.context import BufferedSignal
from .engine.events import Event, EventType, NewEvent
from .engine.exceptions import LeaseLost, RunNotActive, RunNotFound
from .engine.journal import (
    ETA_HORIZON_SECONDS,
    ActivityClaim,
    Dispatch,
    NewRun,
    ParkReason,
    RunClaim,
    StaleClaim,
    VersionKeys,
    seconds_after,
    task_fields,
    timeout_error,
)
from .engine.memory import started_payload
from .engine.replay import Activation, Outcome
from .engine.retry import RetryPolicy
from .models import (
    TERMINAL,
    ActivityTask,
    RunStatus,
    Signal,
    TaskStatus,
    Timer,
    WorkflowEvent,
    WorkflowRun,
)

OPEN_TASKS = [TaskStatus.SCHEDULED, TaskStatus.RUNNING]


def to_event(row: WorkflowEvent) -> Event:
    return Event(
        seq=row.seq,
        type=row.type,
        command_id=row.command_id,
        payload=row.payload,
        created_at=row.created_at,
    )


class OrmJournal:
    """The journal on the database ``using`` (``CONTINUUM["DATABASE"]``)."""

    def __init__(self, using: str = "default") -> None:
        self.using = using

    # -- helpers -------------------------------------------------------------

    def _atomic(self) -> transaction.Atomic:
        return transaction.atomic(using=self.using)

    def _lock_run(self, run_id: str) -> tuple[WorkflowRun, dt.datetime]:
        run = (
            WorkflowRun.objects.using(self.using)
            .select_for_update()
            .annotate(db_now=Now())
            .filter(pk=run_id)
            .first()
        )
        if run is None:
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        return run, run.db_now  # type: ignore[attr-defined,unused-ignore]

    def _lock_task(self, task_id: int) -> tuple[ActivityTask | None, dt.datetime | None]:
        task = (
            ActivityTask.objects.using(self.using)
            .select_for_update()
            .annotate(db_now=Now())
            .filter(pk=task_id)
            .first()
        )
        return task, (task.db_now if task else None)  # type: ignore[attr-defined,unused-ignore]

    def _append(
        self, run: WorkflowRun, events: list[NewEvent], now: dt.datetime
    ) -> list[WorkflowEvent]:
        rows = [
            WorkflowEvent(
                run_id=run.id,
                seq=run.last_seq + offset,
                type=str(new.type),
                command_id=new.command_id,
                payload=new.payload,
                created_at=now,
            )
            for offset, new in enumerate(events, start=1)
        ]
        WorkflowEvent.objects.using(self.using).bulk_create(rows)
        run.last_seq += len(rows)
        return rows

    def _wake(self, run: WorkflowRun, now: dt.datetime, dispatch: Dispatch) -> list[str]:
        """Mark the run as needing an advance; returns the fields to save."""
        run.revision += 1
        if run.next_wakeup_at is None or run.next_wakeup_at > now:
            run.next_wakeup_at = now
        dispatch.runs.append((str(run.id), None))
        return ["revision", "next_wakeup_at", "last_seq", "updated_at"]

    def _check_lease(self, run: WorkflowRun, claim: RunClaim, now: dt.datetime) -> None:
        if (
            run.lease_token != claim.token
            or run.lease_expires_at is None
            or run.lease_expires_at <= now
        ):
            raise LeaseLost(
                f"lease {claim.token} on run {run.id} is no longer held", run_id=str(run.id)
            )

    def _close_open_work(self, run: WorkflowRun) -> None:
        tasks = ActivityTask.objects.using(self.using).filter(run_id=run.id)
        tasks.filter(status=TaskStatus.SCHEDULED).update(status=TaskStatus.CANCELLED)
        tasks.filter(status=TaskStatus.RUNNING).update(cancel_requested=True)
        Timer.objects.using(self.using).filter(run_id=run.id, fired=False).update(cancelled=True)

    def _claim_of(self, run: WorkflowRun, now: dt.datetime) -> RunClaim:
        events = WorkflowEvent.objects.using(self.using).filter(run_id=run.id).order_by("seq")
        signals = Signal.objects.using(self.using).filter(run_id=run.id, consumed_by__isnull=True)
        return RunClaim(
            run_id=str(run.id),
            token=run.lease_token,
            revision=run.revision,
            workflow_name=run.workflow_name,
            version=run.workflow_version,
            history=[to_event(row) for row in events],
            mailbox=[
                BufferedSignal(id=s.id, name=s.name, payload=s.payload)
                for s in signals.order_by("id")
            ],
            now=now,
        )

    @staticmethod
    def _activity_claim(task: ActivityTask, reason: str = "") -> ActivityClaim:
        return ActivityClaim(
            task_id=task.id,
            run_id=str(task.run_id),
            command_id=task.command_id,
            activity=task.activity,
            args=task.args,
            kwargs=task.kwargs,
            attempt=task.attempt,
            token=task.lease_token,
            retry=RetryPolicy.from_json(task.retry),
            timeout_reason=reason,
        )

    # -- runs ----------------------------------------------------------------

    def create_run(self, new: NewRun) -> tuple[str, bool, Dispatch]:
        runs = WorkflowRun.objects.using(self.using)
        key = {
            "namespace": new.namespace,
            "workflow_name": new.workflow_name,
            "idempotency_key": new.idempotency_key,
        }
        with self._atomic():
            if new.idempotency_key is not None:
                existing = runs.filter(**key).values_list("id", flat=True).first()
                if existing is not None:
                    return str(existing), False, Dispatch()
            try:
                # A savepoint, so that losing an idempotency race leaves the caller's
                # transaction usable.
                with self._atomic():
                    run = runs.create(
                        id=new.run_id,
                        workflow_name=new.workflow_name,
                        workflow_version=new.version,
                        version_hash=new.version_hash,
                        input=new.input,
                        namespace=new.namespace,
                        attributes=new.attributes,
                        idempotency_key=new.idempotency_key,
                        chain_root_id=new.run_id,
                        next_wakeup_at=Now(),
                        last_seq=1,
                        revision=1,
                    )
                    WorkflowEvent.objects.using(self.using).create(
                        run=run,
                        seq=1,
                        type=EventType.RUN_STARTED,
                        payload=started_payload(new),
                        created_at=Now(),
                    )
            except IntegrityError:
                existing = runs.filter(**key).values_list("id", flat=True).first()
                if new.idempotency_key is None or existing is None:
                    raise
                return str(existing), False, Dispatch()
        return str(run.id), True, Dispatch(runs=[(str(run.id), None)])

    def claim_run(self, run_id: str, owner: str, lease_seconds: float) -> RunClaim | None:
        with self._atomic():
            try:
                run, now = self._lock_run(run_id)
            except RunNotFound:
                return None
            if run.status in TERMINAL or run.park_reason:
                return None
            if run.lease_expires_at is not None and run.lease_expires_at > now:
                return None
            due = list(
                Timer.objects.using(self.using).filter(
                    run_id=run.id, fired=False, cancelled=False, fire_at__lte=now
                )
            )
            if due:
                self._append(
                    run,
                    [NewEvent(type=EventType.TIMER_FIRED, command_id=t.command_id) for t in due],
                    now,
                )
                Timer.objects.using(self.using).filter(pk__in=[t.pk for t in due]).update(
                    fired=True
                )
                run.revision += 1
                run.next_wakeup_at = now
            if run.next_wakeup_at is None or run.next_wakeup_at > now:
                return None
            run.lease_token += 1
            run.lease_owner = owner
            run.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
            run.status = RunStatus.RUNNING
            run.save(
                update_fields=[
                    "lease_token",
                    "lease_owner",
                    "lease_expires_at",
                    "status",
                    "last_seq",
                    "revision",
                    "next_wakeup_at",
                    "updated_at",
                ]
            )
            return self._claim_of(run, now)

    def refresh_claim(self, claim: RunClaim, lease_seconds: float) -> RunClaim:
        with self._atomic():
            run, now = self._lock_run(claim.run_id)
            self._check_lease(run, claim, now)
            run.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
            run.save(update_fields=["lease_expires_at"])
            return self._claim_of(run, now)

    def commit_activation(
        self, claim: RunClaim, activation: Activation, lease_seconds: float
    ) -> Dispatch:
        dispatch = Dispatch()
        with self._atomic():
            run, now = self._lock_run(claim.run_id)
            self._check_lease(run, claim, now)
            if run.revision != claim.revision:
                raise StaleClaim(claim.run_id)
            # The activation's events carry the time its code saw (ctx times derive from it).
            rows = self._append(run, activation.events, claim.now)
            self._schedule(run, rows, now, dispatch)
            run.status = (
                RunStatus.SUSPENDED
                if activation.outcome == Outcome.SUSPENDED
                else activation.outcome
            )
            if activation.attributes is not None:
                run.attributes = activation.attributes
            fields = [
                "status",
                "attributes",
                "next_wakeup_at",
                "lease_owner",
                "lease_expires_at",
                "revision",
                "last_seq",
                "updated_at",
            ]
            if run.status in TERMINAL:
                run.result = activation.result
                run.error = activation.error
                run.finished_at = now
                fields += ["result", "error", "finished_at"]
                self._close_open_work(run)
            run.next_wakeup_at = None
            run.lease_owner = ""
            run.lease_expires_at = None
            run.revision += 1
            run.save(update_fields=fields)
        return dispatch

    def _schedule(
        self, run: WorkflowRun, rows: list[WorkflowEvent], now: dt.datetime, dispatch: Dispatch
    ) -> None:
        tasks: list[ActivityTask] = []
        timers: list[Timer] = []
        for row in rows:
            payload: dict[str, Any] = row.payload or {}
            if row.type == EventType.ACTIVITY_SCHEDULED:
                fields = task_fields(payload)
                tasks.append(
                    ActivityTask(
                        run_id=run.id,
                        command_id=row.command_id,
                        next_attempt_at=now,
                        schedule_deadline=seconds_after(now, fields["schedule_to_close_timeout"]),
                        **fields,
                    )
                )
            elif row.type == EventType.TIMER_SCHEDULED:
                fire_at = dt.datetime.fromisoformat(payload["fire_at"])
                timers.append(Timer(run_id=run.id, command_id=row.command_id, fire_at=fire_at))
                if (fire_at - now).total_seconds() <= ETA_HORIZON_SECONDS:
                    dispatch.runs.append((str(run.id), fire_at))
            elif row.type == EventType.SIGNAL_RECEIVED:
                Signal.objects.using(self.using).filter(pk=payload["signal_id"]).update(
                    consumed_by=row
                )
                Timer.objects.using(self.using).filter(
                    run_id=run.id, command_id=row.command_id, fired=False
                ).update(cancelled=True)
        if tasks:
            ActivityTask.objects.using(self.using).bulk_create(tasks)
            dispatch.activities.extend((t.id, t.queue, None) for t in tasks)
        if timers:
            Timer.objects.using(self.using).bulk_create(timers)

    def park_run(self, claim: RunClaim, reason: str, detail: str) -> None:
        with self._atomic():
            run, now = self._lock_run(claim.run_id)
            self._check_lease(run, claim, now)
            run.status = RunStatus.SUSPENDED
            run.park_reason = reason
            run.park_detail = detail
            run.lease_owner = ""
            run.lease_expires_at = None
            run.save(
                update_fields=[
                    "status",
                    "park_reason",
                    "park_detail",
                    "lease_owner",
                    "lease_expires_at",
                    "updated_at",
                ]
            )

    def release_parked(self, keys: VersionKeys | None, note: str) -> Dispatch:
        dispatch = Dispatch()
        runs = WorkflowRun.objects.using(self.using).live()
        runs = runs.filter(park_reason=ParkReason.UNKNOWN_VERSION)
        if keys is not None:
            wanted = Q(pk__in=[])
            for name, version in keys:
                wanted |= Q(workflow_name=name) & (
                    Q() if version is None else Q(workflow_version=version)
                )
            runs = runs.filter(wanted)
        with self._atomic():
            for run in runs.select_for_update(skip_locked=True).annotate(db_now=Now()):
                run.park_reason = ""
                run.park_detail = f"{note}; before that: {run.park_detail}"
                fields = self._wake(run, run.db_now, dispatch)  # type: ignore[attr-defined,unused-ignore]
                run.save(update_fields=[*fields, "park_reason", "park_detail"])
        return dispatch

    # -- activities ----------------------------------------------------------

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
            task.status = TaskStatus.RUNNING
            task.attempt += 1
            task.lease_token += 1
            task.lease_owner = owner
            task.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
            task.attempt_deadline = seconds_after(now, task.timeout)
            task.heartbeat_deadline = seconds_after(now, task.heartbeat_timeout)
            task.save(
                update_fields=[
                    "status",
                    "attempt",
                    "lease_token",
                    "lease_owner",
                    "lease_expires_at",
                    "attempt_deadline",
                    "heartbeat_deadline",
                    "updated_at",
                ]
            )
            return self._activity_claim(task)

    @staticmethod
    def _check_task(
        task: ActivityTask | None, claim: ActivityClaim, now: dt.datetime
    ) -> ActivityTask:
        if (
            task is None
            or task.status != TaskStatus.RUNNING
            or task.lease_token != claim.token
            or task.lease_expires_at is None
            or task.lease_expires_at <= now
            or (task.attempt_deadline is not None and task.attempt_deadline <= now)
        ):
            raise LeaseLost(
                f"attempt {claim.attempt} of activity task {claim.task_id} no longer holds its "
                "lease",
                task_id=claim.task_id,
            )
        return task

    def renew_activity(
        self,
        claim: ActivityClaim,
        lease_seconds: float,
        details: Any = None,
        heartbeat: bool = False,
    ) -> bool:
        with self._atomic():
            task, now = self._lock_task(claim.task_id)
            task = self._check_task(task, claim, now or dt.datetime.max)
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
    ) -> Dispatch:
        with self._atomic():
            run, now = self._lock_run(claim.run_id)
            task, _ = self._lock_task(claim.task_id)
            task = self._check_task(task, claim, now)
            return self._end_attempt(run, task, now, result, error, retry_delay)

    def _end_attempt(
        self,
        run: WorkflowRun,
        task: ActivityTask,
        now: dt.datetime,
        result: Any,
        error: dict[str, Any] | None,
        retry_delay: float | None,
    ) -> Dispatch:
        dispatch = Dispatch()
        task.lease_owner = ""
        task.lease_expires_at = None
        fields = ["status", "lease_owner", "lease_expires_at", "lease_token", "updated_at"]
        if run.status in TERMINAL:
            task.status = TaskStatus.CANCELLED
            task.save(update_fields=fields)
            return dispatch
        if error is None:
            task.status = TaskStatus.COMPLETED
            task.result = result
            fields.append("result")
            new = NewEvent(
                type=EventType.ACTIVITY_COMPLETED,
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
                type=EventType.ACTIVITY_FAILED,
                command_id=task.command_id,
                payload={"error": error, "attempts": task.attempt},
            )
        task.save(update_fields=fields)
        self._append(run, [new], now)
        run.save(update_fields=self._wake(run, now, dispatch))
        return dispatch

    @staticmethod
    def _expiry(task: ActivityTask, now: dt.datetime) -> str:
        if task.schedule_deadline is not None and task.schedule_deadline <= now:
            return "schedule_to_close"
        if task.status != TaskStatus.RUNNING:
            return ""
        if task.attempt_deadline is not None and task.attempt_deadline <= now:
            return "start_to_close"
        if task.heartbeat_deadline is not None and task.heartbeat_deadline <= now:
            return "heartbeat"
        if task.lease_expires_at is not None and task.lease_expires_at <= now:
            return "lease"
        return ""

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
        return [self._activity_claim(t, self._expiry(t, t.db_now)) for t in tasks]

    def time_out_activity(self, claim: ActivityClaim, retry_delay: float | None) -> Dispatch:
        with self._atomic():
            run, now = self._lock_run(claim.run_id)
            task, _ = self._lock_task(claim.task_id)
            reason = self._expiry(task, now) if task else ""
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

    # -- sweeping ------------------------------------------------------------

    def fire_due_timers(self, limit: int) -> Dispatch:
        dispatch = Dispatch()
        due = list(
            Timer.objects.using(self.using)
            .filter(fired=False, cancelled=False, fire_at__lte=Now())
            .values_list("run_id", flat=True)
            .distinct()[:limit]
        )
        for run_id in due:
            with self._atomic():
                run, now = self._lock_run(str(run_id))
                timers = list(
                    Timer.objects.using(self.using)
                    .select_for_update(skip_locked=True)
                    .filter(run_id=run_id, fired=False, cancelled=False, fire_at__lte=now)
                )
                if not timers:
                    continue
                Timer.objects.using(self.using).filter(pk__in=[t.pk for t in timers]).update(
                    fired=True
                )
                if run.status in TERMINAL:
                    continue
                self._append(
                    run,
                    [NewEvent(type=EventType.TIMER_FIRED, command_id=t.command_id) for t in timers],
                    now,
                )
                run.save(update_fields=self._wake(run, now, dispatch))
        return dispatch

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

    def due_runs(self, limit: int, grace_seconds: float) -> Dispatch:
        now = Now()
        with self._atomic():
            ids = list(
                WorkflowRun.objects.using(self.using)
                .runnable()
                .select_for_update(skip_locked=True)
                .filter(next_wakeup_at__lte=now - dt.timedelta(seconds=grace_seconds))
                .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now))
                .values_list("id", flat=True)[:limit]
            )
            WorkflowRun.objects.using(self.using).filter(pk__in=ids).update(next_wakeup_at=now)
        return Dispatch(runs=[(str(run_id), None) for run_id in ids])

    # -- client-side writes --------------------------------------------------

    def deliver_signal(
        self, run_id: str, name: str, payload: Any, dedupe_key: str | None
    ) -> Dispatch:
        dispatch = Dispatch()
        with self._atomic():
            run, now = self._lock_run(run_id)
            if run.status in TERMINAL:
                raise RunNotActive(
                    f"run {run.id} is {run.status}; it cannot take signal {name!r}",
                    run_id=str(run.id),
                    status=run.status,
                )
            root = run.chain_root_id or run.id
            signals = Signal.objects.using(self.using)
            if (
                dedupe_key is not None
                and signals.filter(chain_root_id=root, name=name, dedupe_key=dedupe_key).exists()
            ):
                return dispatch
            signals.create(
                run=run, chain_root_id=root, name=name, payload=payload, dedupe_key=dedupe_key
            )
            run.save(update_fields=self._wake(run, now, dispatch))
        return dispatch

    def request_cancel(self, run_id: str, reason: str, terminate: bool) -> Dispatch:
        dispatch = Dispatch()
        with self._atomic():
            run, now = self._lock_run(run_id)
            if run.status in TERMINAL:
                raise RunNotActive(
                    f"run {run.id} is already {run.status}; there is nothing to cancel",
                    run_id=str(run.id),
                    status=run.status,
                )
            fields = []
            if not run.cancel_requested:
                run.cancel_requested = True
                self._append(
                    run,
                    [NewEvent(type=EventType.CANCEL_REQUESTED, payload={"reason": reason})],
                    now,
                )
                self._close_open_work(run)
                fields += ["cancel_requested", *self._wake(run, now, dispatch)]
            if terminate:
                self._append(
                    run,
                    [
                        NewEvent(
                            type=EventType.RUN_CANCELLED,
                            payload={"reason": reason, "terminated": True},
                        )
                    ],
                    now,
                )
                run.status = RunStatus.CANCELLED
                run.finished_at = now
                run.lease_owner = ""
                run.lease_expires_at = None
                run.next_wakeup_at = None
                run.revision += 1
                fields += [
                    "status",
                    "finished_at",
                    "lease_owner",
                    "lease_expires_at",
                    "next_wakeup_at",
                    "revision",
                    "last_seq",
                    "updated_at",
                ]
                dispatch = Dispatch()
            if fields:
                run.save(update_fields=sorted(set(fields)))
        return dispatch

    def history(self, run_id: str) -> list[Event]:
        if not WorkflowRun.objects.using(self.using).filter(pk=run_id).exists():
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        rows = WorkflowEvent.objects.using(self.using).filter(run__pk=run_id).order_by("seq")
        return [to_event(row) for row in rows]

    def on_thread_exit(self) -> None:
        from django.db import connections

        connections[self.using].close()
