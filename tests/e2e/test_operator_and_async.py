"""Activities on real workers: a failed run retried from the command line completes, and
an `async def` activity runs to its end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.core.management import call_command

from continuum_django import WorkflowFailed
from tests.testapp import reliability as rl

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


def test_a_failed_run_retried_from_the_command_line_completes(
    worker_factory: StartWorker, tmp_path: Path
) -> None:
    worker_factory()
    needed = tmp_path / "config.txt"
    run = rl.needs_file_workflow.start(str(needed))
    with pytest.raises(WorkflowFailed, match=r"config\.txt is missing"):
        run.result(timeout=60)
    needed.write_text("configured")  # the operator fixes the cause
    call_command("continuum_runs", "retry", run.id, "--reason", "config restored")
    assert run.result(timeout=60) == "configured"
    types = [e.type for e in run.history()]
    assert types.count("activity_failed") == 1
    assert types[-3:] == ["activity_retry_scheduled", "activity_completed", "run_completed"]


def test_an_async_activity_runs_on_a_real_worker(worker_factory: StartWorker) -> None:
    from continuum_django.models import ActivityTask

    worker_factory()
    run = rl.async_activity.start("EUR")
    assert run.result(timeout=60) == {"currency": "EUR", "rate": 2}
    task = ActivityTask.objects.get(run_id=run.id)
    assert task.heartbeat_details == {"currency": "EUR"}  # aheartbeat reached the journal
