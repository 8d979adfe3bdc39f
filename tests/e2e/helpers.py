"""Small helpers for tests that drive real workers: wait on the database, move its clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db.models.functions import Now

from continuum_django.models import ActivityTask, WorkflowRun

PAST = Now() - __import__("datetime").timedelta(seconds=1)


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)


def wait_for_file(path: Path, timeout: float = 60.0) -> Path:
    return wait_until(lambda: path if path.exists() else None, timeout, f"file {path}")


def expire_run_lease(run_id: str) -> None:
    WorkflowRun.objects.filter(pk=run_id).update(lease_expires_at=PAST, next_wakeup_at=PAST)


def expire_task_leases(run_id: str) -> None:
    ActivityTask.objects.filter(run_id=run_id, status="running").update(lease_expires_at=PAST)


def outcomes_per_command(run_id: str) -> dict[str, int]:
    """How many outcome events each command has: exactly one each, or something duplicated."""
    counts: dict[str, int] = {}
    run = WorkflowRun.objects.get(pk=run_id)
    for event in run.events.exclude(command_id="").exclude(type__endswith="_scheduled"):
        counts[event.command_id] = counts.get(event.command_id, 0) + 1
    return counts
