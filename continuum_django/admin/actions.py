"""The run actions of the admin: each through the engine, each behind its own permission."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from .. import client
from ..engine.exceptions import ContinuumError
from ..models import TERMINAL, WorkflowRun
from ..operations import release_version, retry_run
from .forms import CancelForm, SignalForm


class ReadOnlyAdmin(admin.ModelAdmin):
    """A journal table shown as it is: no add, change or delete (actions go to the engine)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RunActions(ReadOnlyAdmin):
    """Cancel, signal, retry and release: buttons on the run page and bulk actions."""

    actions = ["cancel_selected", "retry_selected", "release_selected_versions"]

    # -- what can be done ----------------------------------------------------

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("continuum.cancel_run")

    def has_signal_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("continuum.signal_run")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("continuum.retry_run")

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("continuum.release_run")

    def _require(self, request: HttpRequest, what: str) -> None:
        if not getattr(self, f"has_{what}_permission")(request):
            raise PermissionDenied(f"you need the continuum.{what}_run permission")

    # -- actions on one run --------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/cancel/", view(self.cancel_view), name="continuum_run_cancel"),
            path("<path:object_id>/signal/", view(self.signal_view), name="continuum_run_signal"),
            path("<path:object_id>/retry/", view(self.retry_view), name="continuum_run_retry"),
            path(
                "<path:object_id>/release/", view(self.release_view), name="continuum_run_release"
            ),
            *super().get_urls(),
        ]

    def _action_page(
        self, request: HttpRequest, run: WorkflowRun, title: str, form: Any, button: str
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "run": run,
            "title": title,
            "form": form,
            "button": button,
            "run_url": reverse("admin:continuum_workflowrun_change", args=[run.pk]),
        }
        return TemplateResponse(request, "admin/continuum/workflowrun/action.html", context)

    def _done(self, run: WorkflowRun) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:continuum_workflowrun_change", args=[run.pk]))

    def _run(self, request: HttpRequest, object_id: str) -> WorkflowRun:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(WorkflowRun, pk=object_id)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "cancel")
        run = self._run(request, object_id)
        form = CancelForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            reason = form.cleaned_data["reason"] or f"cancelled in the admin by {request.user}"
            try:
                client.cancel(run.pk, reason=reason, terminate=form.cleaned_data["terminate"])
            except ContinuumError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Cancellation of run {run.pk} requested.")
            return self._done(run)
        return self._action_page(request, run, f"Cancel run {run.pk}", form, "Cancel the run")

    def signal_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "signal")
        run = self._run(request, object_id)
        form = SignalForm(request.POST or None, run=run)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                client.signal(run.pk, data["name"], data["payload"], dedupe_key=data["dedupe_key"])
            except ContinuumError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"Signal {data['name']!r} sent to run {run.pk}.")
                return self._done(run)
        return self._action_page(request, run, f"Send a signal to run {run.pk}", form, "Send")

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "retry")
        run = self._run(request, object_id)
        if request.method == "POST":
            try:
                retry_run(run.pk)
            except ContinuumError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Run {run.pk} unparked; a worker will replay it.")
            return self._done(run)
        return self._action_page(request, run, f"Retry parked run {run.pk}", None, "Retry")

    def release_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "release")
        run = self._run(request, object_id)
        what = f"{run.workflow_name} v{run.workflow_version}"
        if request.method == "POST":
            count = release_version(run.workflow_name, run.workflow_version)
            self.message_user(request, f"Released {count} run(s) parked on {what}.")
            return self._done(run)
        return self._action_page(request, run, f"Release runs of {what}", None, "Release")

    # -- actions on selected runs --------------------------------------------------

    @admin.action(permissions=["cancel"], description="Cancel selected runs")
    def cancel_selected(
        self, request: HttpRequest, queryset: QuerySet[WorkflowRun]
    ) -> TemplateResponse | None:
        form = CancelForm(request.POST if "apply" in request.POST else None)
        if "apply" not in request.POST or not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Cancel runs",
                "form": form,
                "runs": queryset,
                "action": "cancel_selected",
                "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            }
            return TemplateResponse(
                request, "admin/continuum/workflowrun/cancel_selected.html", context
            )
        reason = form.cleaned_data["reason"] or f"cancelled in the admin by {request.user}"
        done = 0
        for run in queryset.exclude(status__in=TERMINAL):
            try:
                client.cancel(run.pk, reason=reason, terminate=form.cleaned_data["terminate"])
                done += 1
            except ContinuumError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"Cancellation requested for {done} run(s).")
        return None

    @admin.action(permissions=["retry"], description="Retry selected parked runs")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        done = 0
        for run in queryset.live().parked():  # type: ignore[attr-defined]
            try:
                retry_run(run.pk)
                done += 1
            except ContinuumError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{done} parked run(s) unparked.")

    @admin.action(permissions=["release"], description="Release runs of the selected versions")
    def release_selected_versions(
        self, request: HttpRequest, queryset: QuerySet[WorkflowRun]
    ) -> None:
        pairs = sorted(set(queryset.values_list("workflow_name", "workflow_version")))
        count = sum(release_version(name, version) for name, version in pairs)
        self.message_user(request, f"Released {count} run(s) parked on an unknown version.")
