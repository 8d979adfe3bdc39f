"""The admin of continuum: runs with their history and actions; read-only journal tables.

Rows are never edited here: every action goes through the engine (`client.cancel`,
`client.signal`, `operations.retry`, `operations.dead_letter`, `versions.release`), each
behind its own permission (``continuum.cancel_run``, ``signal_run``, ``retry_run`` (also
for dead-lettering), ``release_run``) and each logged as a `LogEntry` on what it touched.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from ..models import ActivityTask, Schedule, Signal, Timer, WorkflowRun, WorkflowVersion
from ..redaction import mask_keys
from . import audit
from .actions import ReadOnlyAdmin
from .dead_letter import DeadLetterActions
from .display import error_html, payload_html
from .runs import WorkflowRunAdmin, link_to
from .schedules import ScheduleAdmin

__all__ = ["ReadOnlyAdmin", "ScheduleAdmin", "WorkflowRunAdmin", "mask_keys"]


class JournalTableAdmin(ReadOnlyAdmin):
    """A read-only journal table whose rows belong to a run."""

    @admin.display(description="run")
    def run_link(self, obj: Any) -> SafeString:
        return link_to(obj.run_id, str(obj.run_id)[:8])


class ActivityTaskAdmin(DeadLetterActions, JournalTableAdmin):
    list_display = [
        "id",
        "run_link",
        "activity",
        "kind",
        "queue",
        "status",
        "flow_state",
        "attempt",
        "next_attempt_at",
        "heartbeat_at",
        "lease_owner",
    ]
    list_filter = ["status", "flow_state", "kind", "queue", "activity"]
    search_fields = ["run__id", "activity", "command_id"]
    list_select_related = ["run"]
    readonly_fields = ["heartbeat", "last_error", "arguments", "result_html"]
    exclude = ["args", "kwargs", "heartbeat_details", "error", "result"]

    @admin.display(description="arguments")
    def arguments(self, task: ActivityTask) -> SafeString:
        return payload_html({"args": task.args, "kwargs": task.kwargs})

    @admin.display(description="heartbeat details")
    def heartbeat(self, task: ActivityTask) -> SafeString:
        return payload_html(task.heartbeat_details)

    @admin.display(description="result")
    def result_html(self, task: ActivityTask) -> SafeString:
        return payload_html(task.result)

    @admin.display(description="error")
    def last_error(self, task: ActivityTask) -> SafeString:
        return error_html(task.error)


class TimerAdmin(JournalTableAdmin):
    list_display = ["id", "run_link", "command_id", "fire_at", "fired", "cancelled"]
    list_filter = ["fired", "cancelled"]
    search_fields = ["run__id", "command_id"]
    date_hierarchy = "fire_at"


class SignalAdmin(JournalTableAdmin):
    list_display = ["id", "run_link", "name", "dedupe_key", "received_at", "consumed"]
    list_filter = ["name"]
    search_fields = ["run__id", "name", "dedupe_key"]
    date_hierarchy = "received_at"
    list_select_related = ["consumed_by"]
    readonly_fields = ["payload_html"]
    exclude = ["payload"]

    @admin.display(description="consumed at seq")
    def consumed(self, signal: Signal) -> str:
        return str(signal.consumed_by.seq) if signal.consumed_by else "—"

    @admin.display(description="payload")
    def payload_html(self, signal: Signal) -> SafeString:
        return payload_html(signal.payload)


class WorkflowVersionAdmin(JournalTableAdmin):
    list_display = ["workflow_name", "version", "version_hash", "worker", "first_seen", "last_seen"]
    list_filter = ["workflow_name"]
    search_fields = ["workflow_name", "version_hash", "worker"]
    actions = ["release_runs"]

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("continuum.release_run")

    @admin.action(permissions=["release"], description="Release runs parked on these versions")
    def release_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowVersion]) -> None:
        count = audit.release(request, queryset.values_list("workflow_name", "version"))
        self.message_user(request, f"Released {count} parked run(s).", messages.SUCCESS)


admin.site.register(WorkflowRun, WorkflowRunAdmin)
admin.site.register(ActivityTask, ActivityTaskAdmin)
admin.site.register(Timer, TimerAdmin)
admin.site.register(Signal, SignalAdmin)
admin.site.register(WorkflowVersion, WorkflowVersionAdmin)
admin.site.register(Schedule, ScheduleAdmin)
