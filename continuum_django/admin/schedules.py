"""The schedules' admin: list with the next fire times, a validated edit form, and the
pause / resume / trigger-now actions behind ``continuum.pause_schedule`` and
``continuum.trigger_schedule`` (add, change and delete use Django's own permissions)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from .. import schedules
from ..engine import codec
from ..engine.exceptions import ContinuumError
from ..engine.schedules import EPOCH, ScheduleError
from ..models import Schedule, ScheduleKind
from .runs import link_to

SPEC_FIELDS = {"kind", "cron", "timezone", "interval", "start_at"}
POLICY_FIELDS = {"overlap", "catchup", "catchup_window"}
# Which form field a `ScheduleError` is about, by what its message names.
ERROR_FIELDS = {
    "cron expression": "cron",
    "time zone": "timezone",
    "interval": "interval",
    "catchup_window": "catchup_window",
    "one-shot": "start_at",
    "anchor": "start_at",
}


class ScheduleForm(forms.ModelForm):
    """The spec and policies, checked as the API checks them: a bad cron expression, time
    zone or argument is an error on its field, naming what was wrong."""

    args = forms.CharField(
        required=False, initial="[]", widget=forms.Textarea(attrs={"rows": 2}),
        help_text="The workflow's positional arguments, a JSON list.",
    )  # fmt: skip
    kwargs = forms.CharField(
        required=False, initial="{}", widget=forms.Textarea(attrs={"rows": 2}),
        help_text="The workflow's keyword arguments, a JSON object.",
    )  # fmt: skip

    class Meta:
        model = Schedule
        fields = [
            "name", "workflow_name", "namespace", "kind", "cron", "timezone", "interval",
            "start_at", "overlap", "catchup", "catchup_window", "paused", "pause_note",
        ]  # fmt: skip
        help_texts = {
            "cron": "Cron only: 5 fields (or 6, seconds first), e.g. 0 9 * * MON-FRI.",
            "timezone": "Cron only: the IANA time zone its hours are read in.",
            "interval": "Interval only: e.g. 01:00:00 for hourly.",
            "start_at": "Once: when it fires. Interval: the anchor slots are aligned on.",
            "catchup_window": "How far back missed slots are still fired; empty: no limit.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            stored = self.instance.input or {}
            self.initial["args"] = json.dumps(stored.get("args", []))
            self.initial["kwargs"] = json.dumps(stored.get("kwargs", {}))

    def _json(self, field: str, kind: type) -> Any:
        text = self.cleaned_data.get(field) or ("[]" if kind is list else "{}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(value, kind):
            raise forms.ValidationError(f"must be a JSON {'list' if kind is list else 'object'}")
        return codec.decode(value)

    def clean_args(self) -> Any:
        return self._json("args", list)

    def clean_kwargs(self) -> Any:
        return self._json("kwargs", dict)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        kind = data.get("kind")
        needs = {"cron": "cron", "interval": "interval"}.get(str(kind), "start_at")
        if not data.get(needs):
            raise forms.ValidationError({needs: f"a {kind} schedule needs this field"})
        if kind == ScheduleKind.INTERVAL and data.get("start_at") is None:
            data["start_at"] = EPOCH  # slots aligned on the epoch, as Every() does
        row = Schedule(**{k: data.get(k) for k in SPEC_FIELDS | POLICY_FIELDS})
        row.timezone = row.timezone or "UTC"
        try:
            spec = schedules.spec_of(row)
        except ScheduleError as exc:
            text = str(exc)
            field = next((f for key, f in ERROR_FIELDS.items() if key in text), needs)
            raise forms.ValidationError({field: text}) from None
        try:
            definition = schedules._definition(data["workflow_name"])
            data["input"] = schedules._input(definition, data["args"], data["kwargs"])
        except ContinuumError as exc:
            raise forms.ValidationError({"workflow_name": str(exc)}) from None
        except (TypeError, ValueError) as exc:
            raise forms.ValidationError({"args": str(exc)}) from None
        data["spec"] = spec
        return data


class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = [
        "name", "workflow_name", "spec", "upcoming", "paused", "overlap", "last_run", "fired_count",
    ]  # fmt: skip
    list_filter = ["paused", "kind", "declared", "overlap", "catchup"]
    search_fields = ["name", "workflow_name"]
    readonly_fields = [
        "declared", "upcoming", "next_fire_at", "buffered_slot", "last_slot", "last_run",
        "last_fired_at", "fired_count", "dropped_count", "created_at", "updated_at",
    ]  # fmt: skip
    actions = ["pause_schedules", "resume_schedules", "trigger_schedules"]

    @admin.display(description="spec")
    def spec(self, row: Schedule) -> str:
        try:
            return schedules.describe(row)
        except ScheduleError as exc:
            return f"invalid: {exc}"

    @admin.display(description="next fire times")
    def upcoming(self, row: Schedule) -> SafeString | str:
        try:
            times = schedules.next_fire_times(row, 5)
        except ScheduleError:
            return "—"
        if not times:
            return "paused" if row.paused else "—"
        return format_html_join(
            "", "{}<br>", ((t.strftime("%Y-%m-%d %H:%M:%S %Z"),) for t in times)
        )

    @admin.display(description="last run")
    def last_run(self, row: Schedule) -> SafeString | str:
        return link_to(row.last_run_id, str(row.last_run_id)[:8]) if row.last_run_id else "—"

    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        obj.input = form.cleaned_data["input"]
        if not change or SPEC_FIELDS & set(form.changed_data) or "paused" in form.changed_data:
            schedules.reschedule(obj)
        super().save_model(request, obj, form, change)

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("continuum.pause_schedule")

    def has_trigger_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("continuum.trigger_schedule")

    def _log(self, request: HttpRequest, rows: list[Schedule], text: str) -> None:
        if rows and request.user.pk is not None:
            LogEntry.objects.log_actions(
                user_id=request.user.pk, queryset=rows, action_flag=CHANGE, change_message=text
            )

    @admin.action(permissions=["pause"], description="Pause the selected schedules")
    def pause_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        rows = [schedules.pause(row.name, note=f"paused by {request.user}") for row in queryset]
        self._log(request, rows, "Paused.")
        self.message_user(request, f"Paused {len(rows)} schedule(s).", messages.SUCCESS)

    @admin.action(permissions=["pause"], description="Resume the selected schedules")
    def resume_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        rows = [schedules.resume(row.name) for row in queryset]
        self._log(request, rows, "Resumed.")
        self.message_user(request, f"Resumed {len(rows)} schedule(s).", messages.SUCCESS)

    @admin.action(permissions=["trigger"], description="Trigger now (start one run each)")
    def trigger_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        rows = list(queryset)
        started = []
        for row in rows:
            try:
                started.append(schedules.trigger(row.name).id)
            except ContinuumError as exc:
                self.message_user(request, f"{row.name}: {exc}", messages.ERROR)
        self._log(request, rows, "Triggered now.")
        self.message_user(request, f"Started {len(started)} run(s).", messages.SUCCESS)
