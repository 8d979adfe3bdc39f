"""The journal's tables: runs, their events, activity tasks, timers, signals, versions."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db import models
from django.db.models import F, Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Now

from .engine import codec
from .engine.journal import TIMED_OUT
from .engine.journal import RunStatus as _RunStatus
from .engine.journal import TaskStatus as _TaskStatus


class RunStatus(models.TextChoices):
    PENDING = _RunStatus.PENDING
    RUNNING = _RunStatus.RUNNING
    SUSPENDED = _RunStatus.SUSPENDED
    COMPLETED = _RunStatus.COMPLETED
    FAILED = _RunStatus.FAILED
    CANCELLED = _RunStatus.CANCELLED
    CONTINUED = _RunStatus.CONTINUED


# In a fixed order (not the frozenset's, which varies by process): an index condition
# holds it, and its migration must not change from one `makemigrations` to the next.
TERMINAL = [str(s) for s in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED,
                             RunStatus.CONTINUED)]  # fmt: skip
assert set(TERMINAL) == _RunStatus.TERMINAL


class ParkReason(models.TextChoices):
    NONE = "", "not parked"
    DRIFT = "drift", "replay drift"
    UNKNOWN_VERSION = "unknown_version", "unknown version"
    ERROR = "error", "failing advances (quarantined)"


class FlowState(models.TextChoices):
    """Where a task with flow-control limits stands with them (see `ActivityTask.flow`)."""

    NONE = "", "not held back"
    SLOT = "slot", "waiting for a concurrency slot"
    RATE = "rate", "waiting for the rate limit"
    GRANTED = "granted", "granted a concurrency slot"


class WorkflowRunQuerySet(models.QuerySet["WorkflowRun"]):
    def live(self) -> WorkflowRunQuerySet:
        return self.exclude(status__in=TERMINAL)

    def parked(self) -> WorkflowRunQuerySet:
        return self.exclude(park_reason="")

    def past_deadline(self) -> WorkflowRunQuerySet:
        """Live runs whose deadline has passed (on the database clock): the sweep ends them.
        Served by the ``continuum_run_deadline`` index alone, finished runs left out."""
        return self.live().filter(deadline__lte=Now())

    def timed_out(self) -> WorkflowRunQuerySet:
        """Runs that ended failed at their deadline."""
        return self.filter(status=RunStatus.FAILED, error__type=TIMED_OUT)

    def runnable(self) -> WorkflowRunQuerySet:
        """Live, unparked runs with a wake-up set."""
        return self.live().filter(park_reason="", next_wakeup_at__isnull=False)


class WorkflowRun(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow_name = models.CharField(max_length=200)
    workflow_version = models.PositiveIntegerField(default=1)
    version_hash = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    input = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    namespace = models.CharField(max_length=100, default="default")
    attributes = models.JSONField(default=dict, blank=True)
    # The last value of each key the workflow published (`ctx.publish`), in the codec's form.
    published_state = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL: no key, outside the unique constraint
    lease_owner = models.CharField(max_length=255, blank=True, default="")
    lease_token = models.BigIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_wakeup_at = models.DateTimeField(null=True, blank=True)
    # When the run is ended as timed out if it has not finished (``options(timeout=...)``).
    deadline = models.DateTimeField(null=True, blank=True)
    park_reason = models.CharField(
        max_length=32, choices=ParkReason.choices, default=ParkReason.NONE, blank=True
    )
    park_detail = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    parent_run = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    parent_command_id = models.CharField(max_length=255, blank=True)
    continued_from = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="continued_as"
    )
    chain_root_id = models.UUIDField(null=True, blank=True, db_index=True)
    last_seq = models.PositiveIntegerField(default=0)
    revision = models.BigIntegerField(default=0)
    # Unexpected errors in a row at `failure_revision` (quarantine: see `ParkReason.ERROR`).
    failure_count = models.PositiveIntegerField(default=0)
    failure_revision = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Start limits (``@workflow(concurrency=...)``): ``{"concurrency": N}``, NULL when none;
    # the key the limit applies per; whether the run waits for a slot (``slot``, not
    # advanced until a live run of its key ends); its rank among those waiting.
    flow = models.JSONField(null=True, blank=True)
    flow_key = models.CharField(max_length=255, blank=True, default="")
    flow_state = models.CharField(
        max_length=16,
        choices=[(FlowState.NONE, FlowState.NONE.label), (FlowState.SLOT, FlowState.SLOT.label)],
        default=FlowState.NONE,
        blank=True,
    )
    priority = models.IntegerField(default=0)

    objects = WorkflowRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "workflow_name", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="continuum_run_idempotency_key",
            )
        ]
        # Plain b-trees: `db_index=True` on a CharField also makes a LIKE index on Postgres,
        # which nothing here queries and every write of a run would have to maintain.
        indexes = [
            models.Index(
                fields=["next_wakeup_at"],
                condition=Q(next_wakeup_at__isnull=False),
                name="continuum_run_wakeup",
            ),
            # Only live runs with a deadline: the sweep's search never reads ended ones.
            models.Index(
                fields=["deadline"],
                condition=Q(deadline__isnull=False) & ~Q(status__in=TERMINAL),
                name="continuum_run_deadline",
            ),
            models.Index(fields=["workflow_name"], name="continuum_run_workflow"),
            models.Index(fields=["status"], name="continuum_run_status"),
            models.Index(fields=["namespace"], name="continuum_run_namespace"),
            # Serves `continuum_prune`'s search for ended runs past their retention.
            models.Index(
                fields=["finished_at"],
                condition=Q(finished_at__isnull=False),
                name="continuum_run_finished",
            ),
            # Live runs with start limits: admission counts them and grants slots in order.
            models.Index(
                fields=["workflow_name", "flow_key", "flow_state"],
                condition=Q(flow__isnull=False) & ~Q(status__in=TERMINAL),
                name="continuum_run_flow",
            ),
        ]
        permissions = [
            ("cancel_run", "Can cancel workflow runs"),
            ("signal_run", "Can send signals to workflow runs"),
            ("retry_run", "Can retry parked workflow runs"),
            ("release_run", "Can release runs parked on a version"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_name} {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def state(self) -> dict[str, Any]:
        """The last value of each key the workflow published (`ctx.publish`), decoded."""
        return {key: codec.decode(value) for key, value in (self.published_state or {}).items()}


class WorkflowEvent(models.Model):
    """One entry of a run's append-only history."""

    # No index of its own: the (run, seq) constraint's index serves lookups by run.
    run = models.ForeignKey(
        WorkflowRun, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=40)
    command_id = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="continuum_event_run_seq"),
            # Exactly one answer per update request, whatever retries and crashes replay.
            models.UniqueConstraint(
                F("run"),
                KeyTextTransform("request_id", "payload"),
                condition=Q(type__in=["update_replied", "update_rejected"]),
                name="continuum_event_one_answer",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"


class TaskStatus(models.TextChoices):
    SCHEDULED = _TaskStatus.SCHEDULED
    RUNNING = _TaskStatus.RUNNING
    COMPLETED = _TaskStatus.COMPLETED
    FAILED = _TaskStatus.FAILED
    CANCELLED = _TaskStatus.CANCELLED
    DEAD_LETTERED = _TaskStatus.DEAD_LETTERED, "dead-lettered"


class ActivityTaskQuerySet(models.QuerySet["ActivityTask"]):
    def open(self) -> ActivityTaskQuerySet:
        return self.filter(status__in=[TaskStatus.SCHEDULED, TaskStatus.RUNNING])


class ActivityTask(models.Model):
    class Kind(models.TextChoices):
        ACTIVITY = "activity"
        COMPENSATION = "compensation"

    # No index of its own: the (run, command_id) constraint's index serves lookups by run.
    run = models.ForeignKey(
        WorkflowRun, on_delete=models.CASCADE, related_name="activity_tasks", db_index=False
    )
    command_id = models.CharField(max_length=255)
    activity = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ACTIVITY)
    queue = models.CharField(max_length=100)
    status = models.CharField(
        max_length=16, choices=TaskStatus.choices, default=TaskStatus.SCHEDULED
    )
    attempt = models.PositiveIntegerField(default=0)
    retry = models.JSONField(default=dict)
    timeout = models.FloatField(null=True, blank=True)
    schedule_to_close_timeout = models.FloatField(null=True, blank=True)
    heartbeat_timeout = models.FloatField(null=True, blank=True)
    next_attempt_at = models.DateTimeField()
    schedule_deadline = models.DateTimeField(null=True, blank=True)
    attempt_deadline = models.DateTimeField(null=True, blank=True)
    heartbeat_deadline = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=255, blank=True, default="")
    lease_token = models.BigIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_details = models.JSONField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Flow control: the limits ({"concurrency": n, "rate": [count, seconds]}, None: none),
    # the key they apply per (with the activity's name), the task's rank among those
    # waiting, and whether it waits.
    flow = models.JSONField(null=True, blank=True)
    flow_key = models.CharField(max_length=255, blank=True, default="")
    priority = models.IntegerField(default=0)
    flow_state = models.CharField(
        max_length=16, choices=FlowState.choices, default=FlowState.NONE, blank=True
    )

    objects = ActivityTaskQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "command_id"], name="continuum_task_command")
        ]
        indexes = [
            models.Index(
                fields=["queue", "next_attempt_at"],
                condition=Q(status="scheduled"),
                name="continuum_task_ready",
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="running"),
                name="continuum_task_running",
            ),
            # Attempts in flight per limit, and the tasks waiting for a slot in grant order;
            # partial, so tasks without limits never maintain them.
            models.Index(
                fields=["activity", "flow_key", "status"],
                condition=Q(flow__isnull=False),
                name="continuum_task_flow",
            ),
            models.Index(
                "activity",
                "flow_key",
                models.F("priority").desc(),
                "id",
                condition=Q(flow_state="slot"),
                name="continuum_task_waiting",
            ),
            # Serves the sweep's search for late attempts (`expired_activities`): only open
            # tasks, so its cost does not grow with the finished runs' completed tasks.
            models.Index(
                fields=["id"],
                condition=Q(status__in=["scheduled", "running"]),
                name="continuum_task_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.activity} ({self.command_id}, {self.status})"


class FlowBucket(models.Model):
    """The rate limit of one (activity, concurrency key), on the database's clock: attempts
    start one per interval (a generic cell-rate algorithm: ``due_at`` is when the next may
    start, with half an interval of tolerance), and tasks that must wait are booked one
    interval apart from ``booked_to`` on, so that they do not all wake at once."""

    activity = models.CharField(max_length=200)
    key = models.CharField(max_length=255, blank=True)
    due_at = models.DateTimeField()
    booked_to = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["activity", "key"], name="continuum_flow_bucket")
        ]

    def __str__(self) -> str:
        return f"rate of {self.activity} [{self.key}] next at {self.due_at}"


class Timer(models.Model):
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="timers")
    command_id = models.CharField(max_length=255)
    fire_at = models.DateTimeField()
    fired = models.BooleanField(default=False)
    cancelled = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(
                fields=["fire_at"],
                condition=Q(fired=False, cancelled=False),
                name="continuum_timer_due",
            )
        ]

    def __str__(self) -> str:
        return f"timer {self.command_id} at {self.fire_at}"


class Signal(models.Model):
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="signals")
    chain_root_id = models.UUIDField()
    name = models.CharField(max_length=200)
    payload = models.JSONField(null=True, blank=True)
    dedupe_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL: no key, outside the unique constraint
    received_at = models.DateTimeField(auto_now_add=True)
    consumed_by = models.OneToOneField(
        WorkflowEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="signal"
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["chain_root_id", "name", "dedupe_key"],
                condition=Q(dedupe_key__isnull=False),
                name="continuum_signal_dedupe",
            )
        ]
        indexes = [
            models.Index(
                fields=["run"],
                condition=Q(consumed_by__isnull=True),
                name="continuum_signal_unread",
            )
        ]

    def __str__(self) -> str:
        return f"signal {self.name} to {self.run_id}"


class WorkflowVersion(models.Model):
    workflow_name = models.CharField(max_length=200)
    version = models.PositiveIntegerField()
    version_hash = models.CharField(max_length=64)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)
    worker = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow_name", "version", "version_hash"],
                name="continuum_version_identity",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workflow_name} v{self.version} ({self.version_hash})"


class SweepRecord(models.Model):
    """When the sweep last ran and what it did, for monitors: one row, upserted by each sweep."""

    ONLY = 1  # the row's primary key: the journal's database keeps one record

    id = models.PositiveSmallIntegerField(primary_key=True, default=ONLY, editable=False)
    last_run_at = models.DateTimeField()
    last_counts = models.JSONField(default=dict)
    last_worker = models.CharField(max_length=255, blank=True)
    runs_total = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"sweep last ran at {self.last_run_at} ({self.runs_total} runs)"


class ScheduleKind(models.TextChoices):
    CRON = "cron", "cron"
    INTERVAL = "interval", "interval"
    ONCE = "once", "once"


class OverlapPolicy(models.TextChoices):
    SKIP = "skip", "skip the slot"
    BUFFER_ONE = "buffer_one", "buffer one slot"
    ALLOW = "allow", "allow overlap"
    CANCEL_PREVIOUS = "cancel_previous", "cancel the previous run"


class CatchupPolicy(models.TextChoices):
    ALL = "all", "fire every missed slot"
    LAST = "last", "fire the last missed slot"
    NONE = "none", "fire no missed slot"


class Schedule(models.Model):
    """A workflow that starts by itself: each slot of its spec starts one run, once.

    The sweep finds due rows by ``next_fire_at`` (a partial index over the unpaused ones)
    and fires each under the row's lock; the run's idempotency key names the schedule and
    the slot, so a slot never starts two runs.
    """

    name = models.CharField(max_length=200, unique=True)
    workflow_name = models.CharField(max_length=200)
    namespace = models.CharField(max_length=100, default="default")
    # The workflow's arguments in the codec's JSON form: {"args": [...], "kwargs": {...}}.
    input = models.JSONField(default=dict, blank=True)
    kind = models.CharField(max_length=16, choices=ScheduleKind.choices)
    cron = models.CharField(max_length=200, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    interval = models.DurationField(null=True, blank=True)
    # The one-shot time, or the interval's anchor.
    start_at = models.DateTimeField(null=True, blank=True)
    overlap = models.CharField(
        max_length=16, choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP
    )
    catchup = models.CharField(
        max_length=8, choices=CatchupPolicy.choices, default=CatchupPolicy.LAST
    )
    catchup_window = models.DurationField(null=True, blank=True, default=dt.timedelta(days=1))
    paused = models.BooleanField(default=False)
    pause_note = models.CharField(max_length=255, blank=True)
    declared = models.BooleanField(default=False, help_text="declared in code, synced on deploy")
    next_fire_at = models.DateTimeField(null=True, blank=True)
    buffered_slot = models.DateTimeField(null=True, blank=True)
    last_slot = models.DateTimeField(null=True, blank=True)
    # No foreign key: pruning a run must not touch its schedule.
    last_run_id = models.UUIDField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    fired_count = models.PositiveBigIntegerField(default=0)
    dropped_count = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(
                fields=["next_fire_at"],
                condition=Q(paused=False, next_fire_at__isnull=False),
                name="continuum_schedule_due",
            ),
            models.Index(
                fields=["buffered_slot"],
                condition=Q(paused=False, buffered_slot__isnull=False),
                name="continuum_schedule_buffered",
            ),
        ]
        permissions = [
            ("pause_schedule", "Can pause and resume schedules"),
            ("trigger_schedule", "Can trigger schedules now"),
        ]

    def __str__(self) -> str:
        return self.name
