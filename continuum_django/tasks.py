"""The Celery tasks that drive runs. Their names are stable: messages in flight survive deploys."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .journal.starts import verified_start
from .sweeper import sweep_exclusively
from .worker import runtime


@shared_task(name="continuum.advance_run", ignore_result=True)
def advance_run(run_id: str, started: dict[str, Any] | None = None) -> str:
    """Replay the run and journal what the workflow decided (optimistically from the run as
    it stands, or under its lease when it changed meanwhile); chains its steps on.
    ``started``: a new run's ``run_started`` payload as the journal signed it, which spares
    the first advance its read; a hint, ignored unless its signature holds for this run."""
    return runtime().advance_run(run_id, verified_start(run_id, started))


@shared_task(name="continuum.execute_activity", ignore_result=True)
def execute_activity(task_id: int) -> str:
    """Run one attempt of an activity task under its lease; chains the run's steps on."""
    return runtime().execute_activity(task_id)


@shared_task(name="continuum.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    """Fire due timers, time out lost attempts and re-send lost messages; idempotent. Left to
    the process already sweeping the database, if any (then the counts are empty). Each
    sweep that runs leaves its time and counts for ``continuum_health``."""
    return sweep_exclusively() or {}


@shared_task(name="continuum.prune", ignore_result=True)
def prune(batch_size: int = 100, forget_idempotency_keys: bool = False) -> dict[str, Any]:
    """Delete the runs past ``CONTINUUM["RETENTION"]`` (`manage.py continuum_prune --execute`);
    for Celery beat. Idempotent, and safe to run from several beats at once."""
    from .retention import prune_runs

    report = prune_runs(
        execute=True, batch_size=batch_size, keep_idempotency_keys=not forget_idempotency_keys
    )
    return report.to_json()
