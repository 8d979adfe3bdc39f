"""The run actions of the admin: each through the engine, each behind its own permission."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.filters import SimpleListFilter
from django.contrib.admin.utils import unquote
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.db.models import JSONField, Q, QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from .. import client
from ..engine.exceptions import ContinuumError
from ..models import TERMINAL, WorkflowRun
from ..operations import retry
from ..redaction import redact_text
from . import audit
from .forms import BulkRetryForm, CancelForm, ReasonForm, RetryForm, SignalForm

# What the retry of a run does next, by what `operations.retry` answered.
RETRIED = {
    "unparked": "a worker will replay it.",
    "reopened": "its failed activity is scheduled again with a fresh attempt budget.",
}
RETRYABLE = Q(status="failed") | (~Q(park_reason="") & ~Q(status__in=TERMINAL))


def touches_json(model: Any, lookup: str) -> bool:
    """Whether a query-string lookup reads into a JSON field (of this or a related model)."""
    for part in lookup.split(LOOKUP_SEP):
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return False
        if isinstance(field, JSONField):
            return True
        if not field.is_relation or field.related_model is None:
            return False
        model = field.related_model
    return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """A journal table shown as it is: no add, change or delete (actions go to the engine)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        """A bulk action on ids that are not ids of this table (not UUIDs, say) is a 404."""
        if not request.POST.get("select_across"):
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                try:
                    self.opts.pk.to_python(value)
                except ValidationError:
                    raise Http404(f"{value!r} is not a {self.opts.verbose_name} id") from None
        return super().response_action(request, queryset, *args, **kwargs)

    def declared_lookups(self, request: HttpRequest) -> set[str]:
        """The fields (and parameter names) the list's declared filters and dates use."""
        names = {self.date_hierarchy} if self.date_hierarchy else set()
        for item in self.get_list_filter(request):
            if isinstance(item, type) and issubclass(item, SimpleListFilter):
                names.add(str(item.parameter_name))
            else:
                field = item[0] if isinstance(item, (list, tuple)) else item
                names.add(str(field).split(LOOKUP_SEP, 1)[0])
        return names

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        """Only the declared filters' lookups; never one into a JSON value.

        Otherwise ``?payload__card_number__startswith=4`` lets a view-only user read a
        redacted value one character at a time. Refused lookups answer 400.
        """
        first = lookup.split(LOOKUP_SEP, 1)[0]
        if first not in self.declared_lookups(request) or touches_json(self.model, lookup):
            return False
        return super().lookup_allowed(lookup, value, request)


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
            "park_detail": redact_text(run.park_detail),
            "title": title,
            "form": form,
            "button": button,
            "run_url": reverse("admin:continuum_workflowrun_change", args=[run.pk]),
        }
        return TemplateResponse(request, "admin/continuum/workflowrun/action.html", context)

    @staticmethod
    def _posted(request: HttpRequest) -> Any:
        """The form data of a POST (bound even when empty: every field may be optional)."""
        return request.POST if request.method == "POST" else None

    def _done(self, run: WorkflowRun) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:continuum_workflowrun_change", args=[run.pk]))

    def _run(self, request: HttpRequest, object_id: str) -> WorkflowRun:
        """The run of an action URL; 404 for an id that is not a run's (even not a UUID)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = self.get_object(request, unquote(object_id))  # None for a malformed id too
        if run is None:
            raise Http404(f"no run has the id {object_id!r}")
        return run

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "cancel")
        run = self._run(request, object_id)
        form = CancelForm(self._posted(request))
        if request.method == "POST" and form.is_valid():
            terminate = form.cleaned_data["terminate"]
            reason = form.cleaned_data["reason"] or f"cancelled in the admin by {request.user}"
            try:
                client.cancel(run.pk, reason=reason, terminate=terminate)
            except ContinuumError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                action = "Terminated" if terminate else "Cancellation requested"
                self.log_change(request, run, audit.message(action, form.cleaned_data["reason"]))
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
                key = f" (dedupe key {data['dedupe_key']!r})" if data["dedupe_key"] else ""
                text = audit.message(f"Sent signal {data['name']!r}{key}", data["reason"])
                self.log_change(request, run, text)
                self.message_user(request, f"Signal {data['name']!r} sent to run {run.pk}.")
                return self._done(run)
        return self._action_page(request, run, f"Send a signal to run {run.pk}", form, "Send")

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "retry")
        run = self._run(request, object_id)
        form = RetryForm(self._posted(request), run=run)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            done = self._retry(request, run, data["reason"], data["revision"], messages.ERROR)
            if done:
                self.message_user(request, f"Run {run.pk} {done}; {RETRIED[done]}")
            return self._done(run)
        what = "failed" if run.status == "failed" else "parked"
        return self._action_page(request, run, f"Retry {what} run {run.pk}", form, "Retry")

    def _retry(
        self, request: HttpRequest, run: WorkflowRun, reason: str, revision: int, level: int
    ) -> str:
        """`operations.retry` fenced at ``revision``, logged; its error as a message."""
        try:
            done = retry(run.pk, operator=request.user.get_username(), reason=reason,
                         revision=revision)  # fmt: skip
        except ContinuumError as exc:
            self.message_user(request, str(exc), level)
            return ""
        audit.log_runs(request, [run], audit.message(f"Retried ({done})", reason))
        return done

    def release_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "release")
        run = self._run(request, object_id)
        what = f"{run.workflow_name} v{run.workflow_version}"
        form = ReasonForm(self._posted(request))
        if request.method == "POST" and form.is_valid():
            pairs = [(run.workflow_name, run.workflow_version)]
            count = audit.release(request, pairs, form.cleaned_data["reason"])
            self.message_user(request, f"Released {count} run(s) parked on {what}.")
            return self._done(run)
        return self._action_page(request, run, f"Release runs of {what}", form, "Release")

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
        terminate = form.cleaned_data["terminate"]
        reason = form.cleaned_data["reason"] or f"cancelled in the admin by {request.user}"
        done = []
        for run in queryset.exclude(status__in=TERMINAL):
            try:
                client.cancel(run.pk, reason=reason, terminate=terminate)
                done.append(run)
            except ContinuumError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        action = "Terminated" if terminate else "Cancellation requested"
        audit.log_runs(request, done, audit.message(action, form.cleaned_data["reason"]))
        self.message_user(request, f"Cancellation requested for {len(done)} run(s).")
        return None

    @admin.action(permissions=["retry"], description="Retry selected parked or failed runs")
    def retry_selected(
        self, request: HttpRequest, queryset: QuerySet[WorkflowRun]
    ) -> TemplateResponse | None:
        """A confirmation page lists the runs with their revisions; applying retries each
        run only if it is still at the revision listed (`RunChanged` otherwise)."""
        runs = list(queryset.filter(RETRYABLE).order_by("created_at"))
        failed = any(run.status == "failed" for run in runs)
        form = BulkRetryForm(request.POST if "apply" in request.POST else None, failed=failed)
        if "apply" not in request.POST or not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Retry runs",
                "form": form,
                "runs": runs,
                "action": "retry_selected",
                "selected": [str(run.pk) for run in runs],
            }
            return TemplateResponse(
                request, "admin/continuum/workflowrun/retry_selected.html", context
            )
        counts = {"unparked": 0, "reopened": 0}
        for run in runs:
            revision = request.POST.get(f"revision_{run.pk}", "")
            if not revision.isdigit():
                self.message_user(request, f"run {run.pk}: no revision given", messages.WARNING)
                continue
            reason = form.cleaned_data["reason"]
            done = self._retry(request, run, reason, int(revision), messages.WARNING)
            if done:
                counts[done] += 1
        self.message_user(
            request, f"{counts['unparked']} run(s) unparked, {counts['reopened']} reopened."
        )
        return None

    @admin.action(permissions=["release"], description="Release runs of the selected versions")
    def release_selected_versions(
        self, request: HttpRequest, queryset: QuerySet[WorkflowRun]
    ) -> None:
        count = audit.release(request, queryset.values_list("workflow_name", "workflow_version"))
        self.message_user(request, f"Released {count} run(s) parked on an unknown version.")
