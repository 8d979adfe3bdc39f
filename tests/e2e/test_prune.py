"""`continuum.prune` sent through the broker to a real worker, as beat sends it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from django.db.models.functions import Now

import continuum_django as continuum
from continuum_django.models import WorkflowEvent, WorkflowRun

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_prunes_expired_runs_when_beat_sends_the_task(
    worker_factory: Callable[..., WorkerProcess], celery_app: Any
) -> None:
    worker_factory()
    ended = [continuum.start("tests.three_steps", args=[n]) for n in range(3)]
    for run in ended:
        run.result(timeout=60)
    live = continuum.start("tests.waiter")
    wait_until(lambda: live.status() == "suspended", what="the waiter to wait")
    WorkflowRun.objects.filter(finished_at__isnull=False).update(
        finished_at=Now() - dt.timedelta(days=31)
    )

    celery_app.send_task("continuum.prune", kwargs={"batch_size": 2}, queue="continuum")

    wait_until(lambda: not WorkflowRun.objects.filter(status="completed").exists(), what="prune")
    assert list(WorkflowRun.objects.values_list("id", flat=True)) == [
        WorkflowRun.objects.get(pk=live.id).pk
    ]
    assert not WorkflowEvent.objects.exclude(run_id=live.id).exists()
