"""The admin's health page: `health_report` for staff who may view runs (``view_workflowrun``)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from ..health import WAITS, health_report
from ..models import FlowState

PROBLEMS = [
    ("overdue_runs", "Runs overdue", "owed an advance past the overdue threshold, no lease"),
    ("stalled_runs", "Runs with no advance", "owed work, unchanged past the stuck threshold"),
    ("expired_run_leases", "Expired run leases", "lease expired past the overdue threshold"),
    ("overdue_timers", "Overdue timers", "due past the overdue threshold, not fired"),
    ("expired_task_leases", "Expired activity leases", "attempt's lease expired, not recovered"),
    ("waiting_activities", "Activities not picked up", "due, untouched past the stuck threshold"),
    ("failing_activities", "Activities failing", "an attempt failed; retrying"),
]


class HealthPage(admin.ModelAdmin):
    """Adds ``health/`` (URL name ``admin:continuum_health``) to the runs admin."""

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.health_view)
        return [path("health/", view, name="continuum_health"), *super().get_urls()]

    def health_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("continuum.view_workflowrun"):
            raise PermissionDenied("you need the continuum.view_workflowrun permission")
        report = health_report()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Workflow health",
            "report": report,
            "waits": [(WAITS[kind], n) for kind, n in report.runs_by_wait.items()],
            "throttled": [
                (FlowState(state).label, n) for state, n in report.throttled_activities.items()
            ],
            "problems": [(label, help, getattr(report, name)) for name, label, help in PROBLEMS],
        }
        return TemplateResponse(request, "admin/continuum/health.html", context)
