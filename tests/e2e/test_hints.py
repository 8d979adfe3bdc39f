"""A forged `continuum.advance_run` message on the real broker changes nothing a worker does."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from celery import Celery

from continuum_django.engine.local import new_run
from continuum_django.models import ActivityTask, WorkflowEvent
from continuum_django.worker import runtime
from tests.testapp import workflows as wf

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_forged_advance_message_runs_the_run_as_the_database_says(
    worker_factory: Callable[..., WorkerProcess], celery_app: Celery
) -> None:
    # A run nobody has advanced yet; its own message is not sent, only the forged one.
    run_id, _, _ = runtime().journal.create_run(new_run(wf.three_steps, [1], {}))
    forged = new_run(wf.retrying, [], {}).started_payload() | {"seed": 424242}
    worker_factory()
    celery_app.send_task("continuum.advance_run", args=[run_id, forged], queue="continuum")

    events = WorkflowEvent.objects.filter(run_id=run_id).order_by("seq")
    wait_until(lambda: events.filter(type="run_completed").exists(), 60, "the run's end")
    assert events.first().payload["workflow"] == "tests.three_steps"  # type: ignore[union-attr]
    assert events.last().payload["result"] == {"value": 4, "text": "value is 4"}  # type: ignore[union-attr]
    tasks = ActivityTask.objects.filter(run_id=run_id).order_by("id")
    assert list(tasks.values_list("activity", flat=True)) == [
        wf.add_one.name,
        wf.double.name,
        wf.describe.name,
    ]
    assert not ActivityTask.objects.filter(activity=wf.fails_twice.name).exists()
