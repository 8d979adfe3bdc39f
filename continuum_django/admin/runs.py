"""The runs admin: a read-only list and run page, and actions that go through the engine."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..engine.events import EventType
from ..engine.journal import TIMED_OUT
from ..models import (
    TERMINAL,
    ActivityTask,
    FlowState,
    ParkReason,
    RunStatus,
    Timer,
    WorkflowEvent,
    WorkflowRun,
    WorkflowVersion,
)
from ..redaction import redact
from . import timeline, triage
from .actions import RunActions
from .display import error_html, payload_html, text_html
from .health import HealthPage
from .paging import EstimatedCountPaginator, IndexedValuesFilter, section
from .triage import ParkedFilter, TriageFilter, moment


def moment_field(name: str, label: str) -> Callable[[Any, WorkflowRun], str]:
    """A run page (and list) field showing the time ``name`` to the second, with its zone."""

    @admin.display(description=label, ordering=name)
    def show(self: Any, run: WorkflowRun) -> str:
        return moment(getattr(run, name))

    return show


OPEN_TASKS = ["scheduled", "running"]
TIMELINE_EVENTS = 2 * timeline.MAX_BARS  # enough events for the bars it draws, no more


def retryable(run: WorkflowRun) -> bool:
    """Whether `operations.retry` may take the run: live and parked, or failed."""
    return run.status == RunStatus.FAILED or bool(run.park_reason and not run.is_terminal)


class DeadlineFilter(admin.SimpleListFilter):
    title = "deadline"
    parameter_name = "deadline"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("timed_out", "timed out"), ("live", "live, with a deadline")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "timed_out":
            return queryset.filter(status=RunStatus.FAILED, error__type=TIMED_OUT)
        if self.value() == "live":
            return queryset.live().filter(deadline__isnull=False)  # type: ignore[attr-defined]
        return queryset


class VersionFilter(admin.SimpleListFilter):
    """By workflow version, its choices read from the registered versions (a small table)
    rather than from a ``SELECT DISTINCT`` over every run."""

    title = "workflow version"
    parameter_name = "workflow_version"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        versions = WorkflowVersion.objects.using(model_admin.get_queryset(request).db)
        numbers = versions.order_by("version").values_list("version", flat=True).distinct()
        return [(str(n), str(n)) for n in numbers]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        if not value.isdigit():
            raise IncorrectLookupParameters(f"workflow_version must be a number, not {value!r}")
        return queryset.filter(workflow_version=int(value))


def link_to(run_id: Any, text: str | None = None) -> SafeString:
    url = reverse("admin:continuum_workflowrun_change", args=[run_id])
    return format_html('<a href="{}">{}</a>', url, text or str(run_id))


def wait_reason(run: WorkflowRun) -> str:
    """What a live run is waiting for, from the annotations `WorkflowRunAdmin` adds."""
    if run.status in TERMINAL:
        return ""
    if run.park_reason:
        return f"parked: {run.get_park_reason_display()}"
    prefix = "cancelling; " if run.cancel_requested else ""
    if run.status == RunStatus.PENDING and run.flow_state == FlowState.SLOT:
        return prefix + f"a start slot of {run.flow_key or 'its workflow'} (flow control)"
    if run.status == RunStatus.PENDING:
        return prefix + "a worker to start it"
    if run.status == RunStatus.RUNNING:
        return prefix + f"replaying on {run.lease_owner or 'a worker'}"
    activity = getattr(run, "waiting_activity", None)
    if activity:
        more = (getattr(run, "open_activities", 1) or 1) - 1
        return prefix + f"activity {activity}" + (f" (+{more} more)" if more else "")
    timer = getattr(run, "waiting_timer", None)
    if timer:
        _, kind, name = [*timer.split(":", 2), "", ""][:3]
        when = getattr(run, "waiting_timer_at", None)
        until = f" until {moment(when)}" if when else ""
        if kind == "signal":
            return prefix + f"signal {name}{until}"
        return prefix + f"timer{until}"
    return prefix + "a signal or another event"


class WorkflowRunAdmin(HealthPage, RunActions):
    list_display = [
        "short_id",
        "workflow",
        "status_badge",
        "waiting_for",
        "last_error",
        "attempt",
        "age",
    ]
    list_filter = [
        "status",
        TriageFilter,
        ParkedFilter,
        DeadlineFilter,
        "flow_state",
        ("workflow_name", IndexedValuesFilter),
        ("namespace", IndexedValuesFilter),
        VersionFilter,
        # A date filter rather than a date drill-down: the drill-down reads every run's date.
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["id", "idempotency_key"]
    search_help_text = (
        "A run id (or part of one) or an idempotency key; key=value finds runs whose "
        "attribute key equals value (not for attributes the redaction hook hides)."
    )
    list_per_page = 50
    show_full_result_count = False
    paginator = EstimatedCountPaginator  # no COUNT(*) of every run for the unfiltered list
    change_form_template = "admin/continuum/workflowrun/change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("id", "status_badge"),
                    ("workflow_name", "workflow_version", "version_hash"),
                    ("namespace", "idempotency_key"),
                    "waiting_for",
                    "trouble",
                    "attributes_html",
                    "state_html",
                    ("created", "updated", "finished"),
                    "deadline_html",
                ]
            },
        ),
        (
            "Lease and wake-up",
            {
                "fields": [
                    ("lease_owner", "lease_token", "lease_expires"),
                    ("next_wakeup", "cancel_requested", "revision"),
                    ("park_reason", "park_detail_html"),
                ]
            },
        ),
        ("Links", {"fields": ["links"]}),
        ("Input and result", {"fields": ["input_html", "result_html"]}),
    ]

    # -- the list --------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowRun]:
        tasks = ActivityTask.objects.filter(run=OuterRef("pk"), status__in=OPEN_TASKS)
        timers = Timer.objects.filter(run=OuterRef("pk"), fired=False, cancelled=False)
        return triage.annotate(super().get_queryset(request)).annotate(
            waiting_activity=Subquery(tasks.order_by("id").values("activity")[:1]),
            open_activities=Subquery(
                tasks.order_by().values("run").annotate(n=Count("id")).values("n")[:1]
            ),
            waiting_timer=Subquery(timers.order_by("fire_at").values("command_id")[:1]),
            waiting_timer_at=Subquery(timers.order_by("fire_at").values("fire_at")[:1]),
        )

    @admin.display(description="run", ordering="id")
    def short_id(self, run: WorkflowRun) -> str:
        return str(run.id)[:8]

    @admin.display(description="workflow", ordering="workflow_name")
    def workflow(self, run: WorkflowRun) -> SafeString:
        """Name and version, the namespace under them (one column: the list fits 1400 px)."""
        return format_html(
            '{} v{}<br><span class="cn-muted">{}</span>',
            run.workflow_name,
            run.workflow_version,
            run.namespace,
        )

    @admin.display(description="last error")
    def last_error(self, run: WorkflowRun) -> SafeString:
        return triage.error_line(triage.failing_error(run))

    @admin.display(description="attempt")
    def attempt(self, run: WorkflowRun) -> str:
        return triage.attempts(run) or "—"

    @admin.display(description="age", ordering="created_at")
    def age(self, run: WorkflowRun) -> SafeString:
        return triage.age_html(run)

    created = moment_field("created_at", "created")
    updated = moment_field("updated_at", "updated")
    finished = moment_field("finished_at", "finished")
    lease_expires = moment_field("lease_expires_at", "lease expires")
    next_wakeup = moment_field("next_wakeup_at", "next wake-up")

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: WorkflowRun) -> SafeString:
        label = run.status + (f" · parked ({run.park_reason})" if run.park_reason else "")
        return format_html(
            '<span class="cn-status cn-status-{}">{}</span>',
            "parked" if run.park_reason and not run.is_terminal else run.status,
            label,
        )

    @admin.display(description="waiting for")
    def waiting_for(self, run: WorkflowRun) -> str:
        return wait_reason(run) or "—"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WorkflowRun], search_term: str
    ) -> tuple[QuerySet[WorkflowRun], bool]:
        key, equals, value = search_term.partition("=")
        if equals and key.strip() and not key.strip().count(" "):
            return attribute_search(queryset, key.strip(), value.strip()), False
        return super().get_search_results(request, queryset, search_term)

    # -- the run page ------------------------------------------------------------

    @admin.display(description="deadline", ordering="deadline")
    def deadline_html(self, run: WorkflowRun) -> SafeString:
        """When the run is ended as timed out (``options(timeout=...)``), and whether it was."""
        if run.deadline is None:
            return format_html('<span class="cn-muted">{}</span>', "none")
        when = moment(run.deadline)
        if run.status == RunStatus.FAILED and (run.error or {}).get("type") == TIMED_OUT:
            return format_html('{} <span class="cn-status cn-status-failed">timed out</span>', when)
        if run.is_terminal:
            return format_html('{} <span class="cn-muted">(ended in time)</span>', when)
        return format_html("{}", when)

    @admin.display(description="attributes")
    def attributes_html(self, run: WorkflowRun) -> SafeString:
        return payload_html(run.attributes)

    @admin.display(description="published state")
    def state_html(self, run: WorkflowRun) -> SafeString:
        return payload_html(run.published_state)

    @admin.display(description="input")
    def input_html(self, run: WorkflowRun) -> SafeString:
        return payload_html(run.input)

    @admin.display(description="result")
    def result_html(self, run: WorkflowRun) -> SafeString:
        return payload_html(run.result)

    @admin.display(description="park detail")
    def park_detail_html(self, run: WorkflowRun) -> SafeString:
        return text_html(run.park_detail)

    @admin.display(description="last error")
    def trouble(self, run: WorkflowRun) -> SafeString:
        """A finished run's error (with its traceback), or the failing activity's error and
        its next attempt while the run is live."""
        return error_html(run.error) if run.error else triage.trouble_html(run)

    @admin.display(description="related runs")
    def links(self, run: WorkflowRun) -> SafeString:
        parts = []
        if run.parent_run_id:
            parts.append(format_html("parent: {}", link_to(run.parent_run_id)))
        children = list(run.children.order_by("created_at").values_list("id", "status")[:50])
        for child_id, status in children:
            parts.append(format_html("child: {} ({})", link_to(child_id), status))
        if run.continued_from_id:
            parts.append(format_html("continued from: {}", link_to(run.continued_from_id)))
        successor = WorkflowRun.objects.filter(continued_from=run).values_list("id", flat=True)
        for successor_id in successor[:1]:
            parts.append(format_html("continued as: {}", link_to(successor_id)))
        if run.chain_root_id and run.chain_root_id != run.id:
            parts.append(format_html("chain root: {}", link_to(run.chain_root_id)))
        if not parts:
            return format_html('<span class="cn-muted">{}</span>', "none")
        return format_html("<br>".join(["{}"] * len(parts)), *parts)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if run is not None:
            events = section(request, run.events.order_by("seq"), "events", "history")
            tasks = section(request, run.activity_tasks.order_by("id"), "tasks", "activity-tasks")
            timers = section(request, run.timers.order_by("fire_at", "id"), "timers", "timers")
            signals = section(
                request,
                run.signals.select_related("consumed_by").order_by("id"),
                "signals",
                "signals",
            )
            context.update(
                run=run,
                events_section=events,
                events=[(event, payload_html(event_payload(event))) for event in events.page],
                tasks_section=tasks,
                tasks=[
                    (task, payload_html(task.heartbeat_details, 500), error_html(task.error))
                    for task in self._short_names(run, tasks.page)
                ],
                timers_section=timers,
                timers=list(timers.page),
                signals_section=signals,
                signals=[(signal, payload_html(signal.payload, 500)) for signal in signals.page],
                timeline_events=TIMELINE_EVENTS,
                timeline=self._timeline(run, events.count),
                can_cancel=not run.is_terminal and self.has_cancel_permission(request),
                can_signal=not run.is_terminal and self.has_signal_permission(request),
                can_retry=retryable(run) and self.has_retry_permission(request),
                can_dead_letter=self.has_retry_permission(request),
                can_release=run.park_reason == ParkReason.UNKNOWN_VERSION
                and not run.is_terminal
                and self.has_release_permission(request),
            )
        return super().change_view(request, object_id, form_url, context)

    @staticmethod
    def _short_names(run: WorkflowRun, rows: Any) -> list[ActivityTask]:
        """The tasks with their short names, and whether each is transactional (as its
        scheduled event recorded: one query for the page)."""
        tasks: list[ActivityTask] = list(rows)
        scheduled = run.events.filter(
            command_id__in=[task.command_id for task in tasks],
            type__in=[EventType.ACTIVITY_SCHEDULED, EventType.COMPENSATION_SCHEDULED],
            payload__transactional=True,
        )
        transactional = set(scheduled.values_list("command_id", flat=True)) if tasks else set()
        for task in tasks:
            task.short_name = task.activity.rsplit(".", 1)[-1]  # type: ignore[attr-defined]
            task.transactional = task.command_id in transactional  # type: ignore[attr-defined]
        return tasks

    @staticmethod
    def _timeline(run: WorkflowRun, count: int) -> SafeString:
        """The timeline of the first `TIMELINE_EVENTS` events: bounded however long the run.

        Cut short, it ends at the last event drawn and leaves later-ending bars open."""
        events = list(run.events.order_by("seq")[:TIMELINE_EVENTS])
        if count > len(events):
            return timeline.svg(events, events[-1].created_at, finished=False)
        return timeline.svg(events, timezone.now(), run.is_terminal)


def event_payload(event: WorkflowEvent) -> Any:
    """What the history shows of an event: a published value as ``{key: value}``, the
    shape the run's published state has, so the redaction hook sees it the same way."""
    payload = event.payload
    if event.type == EventType.STATE_PUBLISHED and isinstance(payload, dict) and "key" in payload:
        return {str(payload["key"]): payload.get("value")}
    return payload


def attribute_search(
    queryset: QuerySet[WorkflowRun], key: str, value: str
) -> QuerySet[WorkflowRun]:
    """Runs whose attribute ``key`` equals ``value`` (as text, or as the JSON it spells).

    A pair the redaction hook would change is never searched: a search that answers
    "found" or "not found" would reveal a hidden value one guess at a time."""
    candidates: list[Any] = [value]
    with contextlib.suppress(ValueError):
        candidates.append(json.loads(value))
    wanted = Q(pk__in=[])
    for candidate in candidates:
        pair = {key: candidate}
        if redact(pair) == pair:
            wanted |= Q(attributes__contains=pair)
    return queryset.filter(wanted)
