"""The app config: loads workflow modules, hooks into Celery workers, adds the sweep to beat."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules


class ContinuumConfig(AppConfig):
    name = "continuum_django"
    label = "continuum"
    verbose_name = "Continuum workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # registers the system checks; see note_startup_workflows below
            worker,  # noqa: F401 - connects the Celery worker hooks (versions)
        )
        from .conf import app_settings

        conf = app_settings()
        if conf.WORKFLOW_MODULES is None:
            autodiscover_modules("workflows")
        else:
            for module in conf.WORKFLOW_MODULES:
                import_module(module)
        checks.note_startup_workflows()
        post_migrate.connect(sync_schedules, sender=self, dispatch_uid="continuum.schedules")
        if conf.BEAT:
            install_beat_entry(float(conf.SWEEP_INTERVAL), conf.DEFAULT_QUEUE)


def install_beat_entry(interval: float, queue: str) -> None:
    """Add ``continuum.sweep`` to the current Celery app's beat schedule."""
    from celery import current_app

    schedule = dict(current_app.conf.beat_schedule or {})
    schedule.setdefault(
        "continuum.sweep",
        {"task": "continuum.sweep", "schedule": interval, "options": {"queue": queue}},
    )
    current_app.conf.beat_schedule = schedule


def sync_schedules(using: str = "default", **kwargs: Any) -> None:
    """After ``migrate`` (a deploy): make the schedule rows match ``@workflow(schedule=...)``."""
    from django.db import connections

    from .conf import app_settings
    from .models import Schedule
    from .schedules import sync_declared

    if using != app_settings().DATABASE:
        return
    if Schedule._meta.db_table not in connections[using].introspection.table_names():
        return  # migrated back below the schedules' migration
    sync_declared()
