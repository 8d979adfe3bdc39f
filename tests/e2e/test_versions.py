"""Two real workers carrying different code: a run goes to the one that has its version."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

import continuum_django as continuum
from continuum_django.engine.local import new_run
from continuum_django.models import WorkflowRun, WorkflowVersion
from continuum_django.tasks import advance_run
from continuum_django.worker import own_queue, runtime
from tests.testapp import versioned

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


def test_a_worker_without_the_runs_version_releases_it_to_one_with_it(
    worker_factory: StartWorker,
) -> None:
    only_v2 = worker_factory("v2only", env={"TESTAPP_VERSIONS": "2"})
    run = versioned.versioned_v1.start(3)
    parked = wait_until(
        lambda: WorkflowRun.objects.filter(pk=run.id, park_reason="unknown_version").first(),
        what="the v2-only worker to park the v1 run",
    )
    assert parked.status == "suspended" and parked.lease_owner == ""
    assert "has no tests.versioned version 1 (only version 2)" in parked.park_detail
    assert [e.type for e in run.history()] == ["run_started"]

    # Parked means left alone: an overdue wake-up is not re-sent by the sweep.
    WorkflowRun.objects.filter(pk=run.id).update(
        next_wakeup_at=parked.next_wakeup_at - dt.timedelta(hours=1)
    )
    assert runtime().sweep()["runs_redispatched"] == 0
    assert WorkflowRun.objects.get(pk=run.id).lease_token == parked.lease_token

    with_v1 = worker_factory("v1", env={"TESTAPP_VERSIONS": "1"})
    assert run.result(timeout=30) == ["v1-first:3", "v1-second:3"]
    history = run.history()
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert [e.type for e in history] == [
        "run_started",
        "activity_scheduled", "activity_completed",
        "activity_scheduled", "activity_completed",
        "run_completed",
    ]  # fmt: skip
    finished = WorkflowRun.objects.get(pk=run.id)
    assert finished.park_reason == ""
    assert finished.park_detail.startswith("released by worker v1@")
    assert "resumes 1 run(s) parked on its versions" in with_v1.log()
    assert f"run {run.id} parked: worker" in only_v2.log()

    carried = {
        (v.workflow_name, v.version): v.worker
        for v in WorkflowVersion.objects.filter(workflow_name="tests.versioned")
    }
    assert carried[("tests.versioned", 1)].startswith("v1@")
    assert set(carried) == {("tests.versioned", 1), ("tests.versioned", 2)}


def test_a_worker_that_started_first_still_picks_up_a_run_parked_later(
    worker_factory: StartWorker,
) -> None:
    worker_factory("v1", env={"TESTAPP_VERSIONS": "1"})  # registered before anything is parked
    worker_factory("v2only", env={"TESTAPP_VERSIONS": "2"})
    # Create the run without its first message, then hand that message to the v2-only
    # worker alone, through its own queue: the park is certain, not up to the broker.
    run_id, _, _ = runtime().journal.create_run(new_run(versioned.versioned_v1, [4]))
    advance_run.apply_async((run_id,), queue=own_queue(f"v2only@{socket.gethostname()}"))
    wait_until(
        lambda: WorkflowRun.objects.filter(pk=run_id).exclude(park_detail="").exists(),
        what="the v2-only worker to park the run",
    )
    # The v1 worker's next registration beat (every REDISPATCH_AFTER) releases it.
    assert continuum.result(run_id, timeout=30) == ["v1-first:4", "v1-second:4"]
    assert "released by worker v1@" in WorkflowRun.objects.get(pk=run_id).park_detail
