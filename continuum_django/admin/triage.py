"""Triage on the runs list: the current activity's error and attempts, age, and the filters
*failing*, *stuck* and *overdue*, all computed in the list's one query.

The *current activity* of a run is its open activity task (the failing one first), or else
its last failed one. "Stuck" and "overdue" use the health report's definitions and
thresholds (`continuum_django.health.Thresholds`), on the database's clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import Case, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, When
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from ..conf import app_settings
from ..health import Thresholds
from ..models import ActivityTask, ParkReason, RunStatus, TaskStatus, Timer, WorkflowRun
from ..redaction import redact_error
from .display import EMPTY

MOMENT = "Y-m-d H:i:s T"  # every time the runs admin shows: to the second, with its zone
ERROR_SHOWN = 100  # characters of an error's message in the list
TITLE_SHOWN = 1000  # and in its title (shown on hover)
OPEN = [TaskStatus.SCHEDULED, TaskStatus.RUNNING]
LIVE = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SUSPENDED]
TASK_FIELDS = ["id", "activity", "status", "attempt", "retry", "error", "next_attempt_at"]


def moment(value: dt.datetime | None) -> str:
    """A time to the second in the current time zone, with the zone's name."""
    return date_format(timezone.localtime(value), MOMENT) if value else "—"


def current_task() -> QuerySet[ActivityTask]:
    """The run's current activity task, for `OuterRef("pk")`: open ones first (failing
    first among them), else the last one that failed."""
    return ActivityTask.objects.filter(
        run=OuterRef("pk"), status__in=[*OPEN, TaskStatus.FAILED]
    ).order_by(
        Case(When(status__in=OPEN, then=0), default=1, output_field=IntegerField()),
        Case(When(error__isnull=False, then=0), default=1, output_field=IntegerField()),
        "-updated_at",
        "-id",
    )


def annotate(queryset: QuerySet[WorkflowRun]) -> QuerySet[WorkflowRun]:
    """The current task's fields as ``task_<field>`` annotations (one subquery each)."""
    task = current_task()
    return queryset.annotate(
        **{f"task_{name}": Subquery(task.values(name)[:1]) for name in TASK_FIELDS}
    )


# -- what the list and the run page show -----------------------------------------------------


def attempts(run: Any) -> str:
    """``k/max`` of the run's current activity (`annotate`), or empty when it has none."""
    if getattr(run, "task_id", None) is None:
        return ""
    retry = run.task_retry or {}
    most = retry.get("max_attempts", app_settings().default_retry.max_attempts)
    return f"{run.task_attempt}/{most}"


def failing_error(run: Any) -> dict[str, Any] | None:
    """The error to triage: the current activity's last one (a failed run's failed
    activity: the cause, not the `ActivityFailed` that wraps it), else a failed run's own."""
    task_error: dict[str, Any] | None = getattr(run, "task_error", None)
    if run.status == RunStatus.FAILED:
        return task_error or run.error
    return task_error if run.status in LIVE else None


def error_line(error: dict[str, Any] | None, limit: int = ERROR_SHOWN) -> SafeString:
    """``Type: message`` on one line, redacted and truncated (the full text in its title)."""
    shown = redact_error(error)
    if not shown:
        return EMPTY
    kind = str(shown.get("type", "error"))
    text = f"{kind}: {shown.get('message', '')}"
    title = text if len(text) <= TITLE_SHOWN else text[: TITLE_SHOWN - 1] + "…"
    text = f"{kind.rsplit('.', 1)[-1]}: {shown.get('message', '')}"  # the class name is enough
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return format_html('<span class="cn-error-line" title="{}">{}</span>', title, short)


def age_html(run: WorkflowRun) -> SafeString:
    """How long ago the run was created, the exact time in the title."""
    return format_html(
        '<span title="{}">{}</span>', moment(run.created_at), timesince(run.created_at)
    )


def trouble_html(run: Any) -> SafeString:
    """The run page's header line: a failed run's error, or the failing activity's error,
    attempt and when its next attempt is due."""
    if run.status == RunStatus.FAILED:
        return error_line(run.error, 1000) if run.error else EMPTY
    if run.status not in LIVE or not getattr(run, "task_error", None):
        return EMPTY
    name = str(run.task_activity).rsplit(".", 1)[-1]
    head = format_html(
        "activity <strong>{}</strong> (attempt {}) failed: {}",
        name,
        attempts(run).replace("/", " of "),
        error_line(run.task_error, 1000),
    )
    if run.task_status == TaskStatus.SCHEDULED:
        return format_html("{}<br>next attempt due {}", head, moment(run.task_next_attempt_at))
    if run.task_status == TaskStatus.RUNNING:
        return format_html("{}<br>next attempt under way", head)
    return head


# -- the filters -------------------------------------------------------------------------


def _ago(seconds: float) -> Any:
    return Now() - dt.timedelta(seconds=seconds)


def failing() -> Q:
    """A failed run, or a live one whose open activity task has failed an attempt."""
    tasks = ActivityTask.objects.filter(
        Q(error__isnull=False) | Q(attempt__gt=1), run=OuterRef("pk"), status__in=OPEN
    )
    return Q(status=RunStatus.FAILED) | Q(Exists(tasks), status__in=LIVE)


def stuck(limits: Thresholds) -> Q:
    """Live, unparked, and owed an advance past the overdue threshold with no lease, or owed
    work and unchanged past the stuck threshold (the health report's overdue and stalled)."""
    unleased = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=Now())
    overdue = Q(next_wakeup_at__lt=_ago(limits.overdue_after)) & unleased
    owed = Q(status__in=[RunStatus.PENDING, RunStatus.RUNNING]) | Q(next_wakeup_at__isnull=False)
    stalled = owed & Q(updated_at__lt=_ago(limits.stuck_after))
    return Q(overdue | stalled, status__in=LIVE, park_reason="")


def overdue(limits: Thresholds) -> Q:
    """Live, with a wake-up or a timer past due by more than the overdue threshold."""
    late = _ago(limits.overdue_after)
    timers = Timer.objects.filter(
        run=OuterRef("pk"), fired=False, cancelled=False, fire_at__lt=late
    )
    return Q(Q(next_wakeup_at__lt=late) | Exists(timers), status__in=LIVE)


class ParkedFilter(admin.SimpleListFilter):
    title = "parked"
    parameter_name = "parked"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (ParkReason.DRIFT, "on replay drift"),
            (ParkReason.UNKNOWN_VERSION, "on unknown version"),
            (ParkReason.ERROR, "on repeated errors"),
            ("any", "parked, any reason"),
            ("no", "not parked"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "any":
            return queryset.live().parked()  # type: ignore[attr-defined]
        if value == "no":
            return queryset.filter(park_reason="")
        if value:
            return queryset.live().filter(park_reason=value)  # type: ignore[attr-defined]
        return queryset


class TriageFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "triage"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("failing", "failing"),
            ("stuck", "stuck"),
            ("overdue", "overdue"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        choose = FILTERS.get(str(self.value()))
        return queryset.filter(choose(Thresholds())) if choose else queryset


FILTERS: dict[str, Callable[[Thresholds], Q]] = {
    "failing": lambda limits: failing(),
    "stuck": stuck,
    "overdue": overdue,
}
