"""Reading the health report: a fixed number of aggregate queries, on the database's clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from django.db import connections
from django.db.models import Case, Count, Exists, F, Max, Min, OuterRef, Q, QuerySet, Value, When
from django.db.models.functions import Now
from kombu.exceptions import OperationalError

from ..conf import app_settings
from ..models import ActivityTask, FlowState, RunStatus, SweepRecord, TaskStatus, Timer, WorkflowRun
from ..models import WorkflowVersion as Version
from .report import (
    WAITS,
    FailingActivity,
    HealthReport,
    Problem,
    Queues,
    Sweep,
    Thresholds,
    Workers,
    reasons,
)

LIVE = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SUSPENDED]
SAMPLES = 5  # run ids shown per problem
FAILING_SHOWN = 10
# Open tasks as an OR of the statuses, so Postgres can use the two partial indexes.
OPEN_TASK = Q(status=TaskStatus.SCHEDULED) | Q(status=TaskStatus.RUNNING)


def wait_kind() -> Case:
    """The `WAITS` key of a live run, as an SQL expression over its row."""
    run = OuterRef("pk")
    timers = Timer.objects.filter(run=run, fired=False, cancelled=False)
    return Case(
        When(~Q(park_reason=""), then=Value("parked")),
        When(status=RunStatus.PENDING, flow_state=FlowState.SLOT, then=Value("slot")),
        When(status=RunStatus.PENDING, then=Value("start")),
        When(status=RunStatus.RUNNING, then=Value("replay")),
        When(Exists(ActivityTask.objects.filter(OPEN_TASK, run=run)), then=Value("activity")),
        When(Exists(timers.filter(command_id__contains=":signal:")), then=Value("signal")),
        When(Exists(timers), then=Value("timer")),
        When(
            Exists(WorkflowRun.objects.filter(parent_run=run, status__in=LIVE)),
            then=Value("child"),
        ),
        default=Value("event"),
    )


def health_report(
    thresholds: Thresholds | None = None, *, inspect_workers: float | None = None
) -> HealthReport:
    """The journal's health now (the database's clock). ``inspect_workers``: seconds to
    wait for Celery workers to say which queues they consume (needs the broker)."""
    limits = thresholds or Thresholds()
    using = app_settings().DATABASE
    now = _database_now(using)

    def ago(seconds: float) -> dt.datetime:
        return now - dt.timedelta(seconds=seconds)

    overdue, stuck = ago(limits.overdue_after), ago(limits.stuck_after)
    runs = WorkflowRun.objects.using(using).filter(status__in=LIVE).order_by()
    tasks = ActivityTask.objects.using(using).filter(OPEN_TASK).order_by()

    groups = list(
        runs.annotate(wait=wait_kind())
        .values("status", "park_reason", "wait")
        .annotate(n=Count("pk"), oldest=Min("created_at"))
    )
    by_status: dict[str, int] = {}
    by_wait: dict[str, int] = {}
    parked: dict[str, int] = {}
    for row in groups:
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        by_wait[row["wait"]] = by_wait.get(row["wait"], 0) + row["n"]
        if row["park_reason"]:
            parked[row["park_reason"]] = parked.get(row["park_reason"], 0) + row["n"]
    live = sum(by_status.values())

    unleased = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
    # Not runs waiting for a start slot: a run's end wakes them, not the clock.
    owed = (
        Q(status__in=[RunStatus.PENDING, RunStatus.RUNNING]) & ~Q(flow_state=FlowState.SLOT)
    ) | Q(next_wakeup_at__isnull=False)
    run_problems = _problems(
        runs,
        overdue_runs=(Q(park_reason="", next_wakeup_at__lt=overdue) & unleased, "next_wakeup_at"),
        stalled_runs=(Q(owed, park_reason="", updated_at__lt=stuck), "updated_at"),
        expired_run_leases=(Q(lease_expires_at__lt=overdue), "lease_expires_at"),
    )
    task_problems = _problems(
        tasks,
        expired_task_leases=(
            Q(status=TaskStatus.RUNNING, lease_expires_at__lt=overdue),
            "lease_expires_at",
        ),
        waiting_activities=(
            # Not those waiting for a concurrency slot: a hand-off wakes them, not the clock.
            Q(status=TaskStatus.SCHEDULED, next_attempt_at__lte=now, updated_at__lt=stuck)
            & ~Q(flow_state=FlowState.SLOT),
            "updated_at",
        ),
        failing_activities=(Q(error__isnull=False), "updated_at"),
    )
    timer_problems = _problems(
        Timer.objects.using(using).filter(fired=False, cancelled=False).order_by(),
        overdue_timers=(Q(fire_at__lt=overdue), "fire_at"),
    )
    failing = _failing(tasks) if task_problems["failing_activities"].count else []
    answers: dict[str, list[str]] | None = None
    broker_error = ""
    if inspect_workers is not None:
        try:
            answers = _active_queues(inspect_workers)
        except OperationalError as exc:  # the broker is down or refuses us: say so
            broker_error = str(exc) or type(exc).__name__
    report = HealthReport(
        status="ok",
        reasons=[],
        checked_at=now,
        thresholds=limits,
        live_runs=live,
        oldest_live_run_at=min((row["oldest"] for row in groups), default=None),
        runs_by_status=by_status,
        runs_by_wait={kind: by_wait[kind] for kind in WAITS if kind in by_wait},
        parked_by_reason=parked,
        **run_problems,
        **task_problems,
        **timer_problems,
        failing=failing,
        sweep=_sweep(using),
        workers=_workers(using, answers),
        queues=_queues(tasks, answers, broker_error),
        throttled_activities=_throttled(tasks),
    )
    found = reasons(report)
    return replace(report, status="degraded" if found else "ok", reasons=found)


def record_sweep(counts: dict[str, int]) -> None:
    """Leave the time and counts of a finished sweep where `health_report` reads them."""
    using = app_settings().DATABASE
    values = {"last_run_at": Now(), "last_counts": counts, "last_worker": app_settings().worker_id}
    records = SweepRecord.objects.using(using)
    if not records.filter(pk=SweepRecord.ONLY).update(**values, runs_total=F("runs_total") + 1):
        # The first sweep of this database (a racing first sweep's insert may win instead).
        row = SweepRecord(pk=SweepRecord.ONLY, runs_total=1, **values)
        records.bulk_create([row], ignore_conflicts=True)


# -- the pieces ------------------------------------------------------------------------


def _database_now(using: str) -> dt.datetime:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        (value,) = cursor.fetchone()
    return _aware(value)


def _aware(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, str):  # SQLite answers with text, in UTC
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _problems(rows: QuerySet[Any], **kinds: tuple[Q, str]) -> dict[str, Problem]:
    """Count and oldest moment of each kind in one query, then a few run ids of each."""
    aggregates: dict[str, Any] = {}
    for name, (where, moment) in kinds.items():
        aggregates[f"{name}_n"] = Count("pk", filter=where)
        aggregates[f"{name}_oldest"] = Min(moment, filter=where)
    totals = rows.aggregate(**aggregates)
    found = {}
    for name, (where, moment) in kinds.items():
        count = totals[f"{name}_n"]
        samples: list[str] = []
        if count:
            run = "pk" if rows.model is WorkflowRun else "run_id"
            ids = rows.filter(where).order_by(moment).values_list(run, flat=True)[:SAMPLES]
            samples = [str(run_id) for run_id in ids]
        found[name] = Problem(count=count, oldest=totals[f"{name}_oldest"], samples=samples)
    return found


def _failing(tasks: QuerySet[ActivityTask]) -> list[FailingActivity]:
    default_max = app_settings().default_retry.max_attempts
    rows = tasks.filter(error__isnull=False).order_by("-updated_at")[:FAILING_SHOWN]
    return [
        FailingActivity(
            task_id=task.pk,
            run_id=str(task.run_id),
            activity=task.activity,
            status=task.status,
            attempt=task.attempt,
            max_attempts=int((task.retry or {}).get("max_attempts", default_max)),
            next_attempt_at=task.next_attempt_at,
            error_type=str((task.error or {}).get("type", "error")),
            error_message=str((task.error or {}).get("message", ""))[:500],
        )
        for task in rows.only(
            "id", "run_id", "activity", "status", "attempt", "retry", "next_attempt_at", "error"
        )
    ]


def _throttled(tasks: QuerySet[ActivityTask]) -> dict[str, int]:
    """Open tasks held back by flow control, by state."""
    rows = tasks.exclude(flow_state="").values("flow_state").annotate(n=Count("pk"))
    return {row["flow_state"]: row["n"] for row in rows.order_by("flow_state")}


def _sweep(using: str) -> Sweep:
    record = SweepRecord.objects.using(using).filter(pk=SweepRecord.ONLY).first()
    if record is None:
        return Sweep(last_run_at=None, last_counts={}, last_worker="", runs_total=0)
    return Sweep(
        last_run_at=record.last_run_at,
        last_counts=dict(record.last_counts),
        last_worker=record.last_worker,
        runs_total=record.runs_total,
    )


def _workers(using: str, answers: dict[str, list[str]] | None) -> Workers:
    beats = list(
        Version.objects.using(using)
        .values("worker")
        .annotate(seen=Max("last_seen"))
        .order_by("-seen")[:20]
    )
    return Workers(
        last_seen=beats[0]["seen"] if beats else None,
        recent=[row["worker"] for row in beats],
        inspected=None if answers is None else sorted(answers),
    )


def _active_queues(timeout: float) -> dict[str, list[str]]:
    """Each answering worker's queues, from Celery's remote control (through the broker)."""
    from celery import current_app

    answers = current_app.control.inspect(timeout=timeout).active_queues() or {}
    return {worker: [queue["name"] for queue in queues] for worker, queues in answers.items()}


def _queues(
    tasks: QuerySet[ActivityTask], answers: dict[str, list[str]] | None, broker_error: str
) -> Queues:
    needed = {app_settings().DEFAULT_QUEUE}
    if answers is None:
        return Queues(needed=sorted(needed), without_consumer=None, broker_error=broker_error)
    needed.update(tasks.values_list("queue", flat=True).distinct())
    consumed = {queue for queues in answers.values() for queue in queues}
    return Queues(needed=sorted(needed), without_consumer=sorted(needed - consumed))
