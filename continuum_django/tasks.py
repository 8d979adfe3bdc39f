"""The Celery tasks that drive runs. Their names are stable: messages in flight survive deploys."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .health import record_sweep
from .worker import runtime


@shared_task(name="continuum.advance_run", ignore_result=True)
def advance_run(run_id: str, started: dict[str, Any] | None = None) -> str:
    """Replay the run and journal what the workflow decided (optimistically from the run as
    it stands, or under its lease when it changed meanwhile); chains its steps on.
    ``started``: a new run's ``run_started`` payload, which spares the first advance its read."""
    return runtime().advance_run(run_id, started)


@shared_task(name="continuum.execute_activity", ignore_result=True)
def execute_activity(task_id: int) -> str:
    """Run one attempt of an activity task under its lease; chains the run's steps on."""
    return runtime().execute_activity(task_id)


@shared_task(name="continuum.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    """Fire due timers, time out lost attempts and re-send lost messages; idempotent.
    Each sweep that finishes leaves its time and counts for ``continuum_health``."""
    counts = runtime().sweep()
    record_sweep(counts)
    return counts
