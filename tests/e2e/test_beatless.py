"""No single point of failure: with Celery beat never started, workers sweep by themselves."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from continuum_django.models import Timer, WorkflowRun
from tests.testapp import workflows as wf

from .helpers import PAST, expire_task_leases, outcomes_per_command, wait_for_file, wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


def test_a_due_timer_fires_with_no_beat_and_no_message(
    worker_factory: StartWorker, broker_url: str
) -> None:
    worker_factory()  # no beat anywhere
    run = wf.sleeper.start(3600)  # beyond the ETA horizon: only the sweep can fire it
    wait_until(lambda: Timer.objects.filter(run_id=run.id).exists(), what="the timer row")
    redis.Redis.from_url(broker_url).flushdb()  # and no message is left to help
    Timer.objects.filter(run_id=run.id).update(fire_at=PAST)  # the timer is due now
    assert run.result(timeout=60) == "woke"


def test_a_killed_workers_run_finishes_on_another_with_no_beat(
    worker_factory: StartWorker, tmp_path: Path
) -> None:
    first = worker_factory("first")
    second = worker_factory("second")
    run = wf.blocking_activity.start(str(tmp_path))
    wait_for_file(tmp_path / "attempt-1")
    body = int((tmp_path / "attempt-1").read_text())  # the pool process running attempt 1
    victim, survivor = (first, second) if os.getpgid(body) == first.pid else (second, first)
    victim.kill()

    expire_task_leases(run.id)  # the lease would lapse after LEASE_SECONDS; skip the wait
    assert run.result(timeout=60)["attempt"] == 2
    assert survivor.running
    assert set(outcomes_per_command(run.id).values()) == {1}
    assert WorkflowRun.objects.get(pk=run.id).status == "completed"
