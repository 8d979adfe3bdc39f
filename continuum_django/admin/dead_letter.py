"""Dead-lettering failed activity tasks in the admin: so they stop showing as work to act on.

Guarded by ``continuum.retry_run`` (the permission of the other actions on failed work),
each needs a reason, goes through `operations.dead_letter` and leaves a `LogEntry`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from ..engine.exceptions import ContinuumError
from ..models import ActivityTask, TaskStatus
from ..operations import dead_letter
from . import audit
from .actions import ReadOnlyAdmin
from .forms import RequiredReasonForm

TEMPLATE = "admin/continuum/activitytask/dead_letter.html"


class DeadLetterActions(ReadOnlyAdmin):
    """A "Dead-letter" button on a failed task's page, and the same as a bulk action."""

    actions = ["dead_letter_selected"]
    change_form_template = "admin/continuum/activitytask/change_form.html"

    def has_dead_letter_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("continuum.retry_run")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.dead_letter_view)
        url = path("<path:object_id>/dead-letter/", view, name="continuum_task_dead_letter")
        return [url, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        task = self.get_object(request, unquote(object_id))
        can = task is not None and task.status == TaskStatus.FAILED
        context = {
            **(extra_context or {}),
            "can_dead_letter": can and self.has_dead_letter_permission(request),
        }
        return super().change_view(request, object_id, form_url, context)

    def _letter(self, request: HttpRequest, task: ActivityTask, reason: str, level: int) -> bool:
        try:
            dead_letter(task.pk, operator=request.user.get_username(), reason=reason)
        except ContinuumError as exc:
            self.message_user(request, str(exc), level)
            return False
        self.log_change(request, task, audit.message("Dead-lettered", reason))
        return True

    def _page(
        self, request: HttpRequest, tasks: list[ActivityTask], form: Any, bulk: bool
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Dead-letter failed activity tasks",
            "tasks": tasks,
            "form": form,
            "bulk": bulk,
        }
        return TemplateResponse(request, TEMPLATE, context)

    def dead_letter_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_dead_letter_permission(request):
            raise PermissionDenied("you need the continuum.retry_run permission")
        task = self.get_object(request, unquote(object_id))  # None for a malformed id too
        if task is None:
            raise Http404(f"no activity task has the id {object_id!r}")
        form = RequiredReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            if self._letter(request, task, form.cleaned_data["reason"], messages.ERROR):
                self.message_user(request, f"Activity task {task.pk} dead-lettered.")
            url = reverse("admin:continuum_activitytask_change", args=[task.pk])
            return HttpResponseRedirect(url)
        return self._page(request, [task], form, bulk=False)

    @admin.action(permissions=["dead_letter"], description="Dead-letter selected failed tasks")
    def dead_letter_selected(
        self, request: HttpRequest, queryset: QuerySet[ActivityTask]
    ) -> TemplateResponse | None:
        tasks = list(queryset.filter(status=TaskStatus.FAILED).order_by("id"))
        form = RequiredReasonForm(request.POST if "apply" in request.POST else None)
        if "apply" not in request.POST or not form.is_valid():
            return self._page(request, tasks, form, bulk=True)
        reason = form.cleaned_data["reason"]
        done = sum(self._letter(request, task, reason, messages.WARNING) for task in tasks)
        self.message_user(request, f"{done} activity task(s) dead-lettered.")
        return None
