"""Operator actions on parked runs: retry one, release the runs of a version.

A parked run is `suspended` with a park reason: the sweep leaves it alone until an
operator (or a worker carrying its version) unparks it. Unparking happens under the
run's row lock, leaves a due wake-up as durable evidence for the sweep, and sends
``advance_run`` once the transaction commits.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.functions import Now

from .conf import app_settings
from .engine.exceptions import ContinuumError, RunNotActive, RunNotFound
from .engine.journal import Dispatch
from .models import TERMINAL, ParkReason, WorkflowRun
from .worker import runtime


class RunNotParked(ContinuumError):
    """The run is not parked, so there is nothing to retry."""


def _unpark(run: WorkflowRun, dispatch: Dispatch) -> None:
    run.park_reason = ParkReason.NONE
    run.park_detail = ""
    run.next_wakeup_at = Now()
    run.revision += 1
    run.save(update_fields=["park_reason", "park_detail", "next_wakeup_at", "revision"])
    dispatch.runs.append((str(run.id), None))


def retry_run(run_id: Any) -> None:
    """Unpark one parked run (drift or unknown version) so that a worker replays it again.

    Raises `RunNotFound`, `RunNotActive` for a finished run, `RunNotParked` otherwise.
    """
    using = app_settings().DATABASE
    dispatch = Dispatch()
    engine = runtime()
    with transaction.atomic(using=using):
        run = WorkflowRun.objects.using(using).select_for_update().filter(pk=run_id).first()
        if run is None:
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        if run.status in TERMINAL:
            raise RunNotActive(
                f"run {run.id} is {run.status}; only a live parked run can be retried",
                run_id=str(run.id),
                status=run.status,
            )
        if not run.park_reason:
            raise RunNotParked(
                f"run {run.id} is not parked (it is {run.status}); nothing to retry",
                run_id=str(run.id),
            )
        _unpark(run, dispatch)
        engine.dispatcher.send(dispatch)


def release_version(name: str, version: int | None = None) -> int:
    """Unpark the runs of workflow ``name`` (at ``version``, or any) parked on an unknown
    version, so that workers carrying it pick them up. Returns how many were released."""
    from .versions import release

    return len(release(name, version, by="an operator in the admin"))
