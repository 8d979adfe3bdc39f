"""Run deadlines on real workers: the workers' sweep ends a late run and its child."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from django.db.models.functions import Now

import continuum_django as continuum
from continuum_django.models import Timer, WorkflowRun
from tests.testapp import deadlines as dl

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


def test_a_run_sleeping_past_its_deadline_ends_timed_out_with_its_child(
    worker_factory: StartWorker,
) -> None:
    worker_factory()
    run = dl.parent.options(timeout=dt.timedelta(hours=1)).start(3600)
    family = WorkflowRun.objects.filter(pk=run.id) | WorkflowRun.objects.filter(
        parent_run_id=run.id
    )
    wait_until(
        lambda: family.filter(status="suspended").count() == 2,
        what="the parent and its child asleep",
    )
    # The deadline passes on the database's clock rather than by waiting an hour.
    WorkflowRun.objects.filter(pk=run.id).update(deadline=Now() - dt.timedelta(seconds=1))

    with pytest.raises(continuum.WorkflowTimedOut, match="deadline"):
        run.result(timeout=60)
    (child,) = WorkflowRun.objects.filter(parent_run_id=run.id)
    assert child.status == "cancelled"
    assert [e.type for e in child.events.order_by("seq")][-1] == "run_cancelled"
    types = [e.type for e in run.get().events.order_by("seq")]
    assert types[-3:] == ["child_cancelled", "run_timed_out", "run_failed"]
    assert not Timer.objects.filter(run__in=family, fired=False, cancelled=False).exists()


def test_a_short_timeout_ends_the_run_without_help(worker_factory: StartWorker) -> None:
    worker_factory()
    run = dl.sleeper.options(timeout=2).start(3600)
    with pytest.raises(continuum.WorkflowTimedOut):
        run.result(timeout=60)
    assert run.status() == "failed"


def test_a_run_that_finishes_in_time_is_untouched(worker_factory: StartWorker) -> None:
    worker_factory()
    run = dl.quick.options(timeout=3600).start()
    assert run.result(timeout=60) == "done"
