"""Runs driven by real Celery worker processes over a real Redis broker and Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from django.conf import settings
from django.db import transaction

import continuum_django as continuum
from continuum_django.models import ActivityTask, WorkflowRun
from tests.testapp import workflows as wf

from .helpers import (
    expire_run_lease,
    expire_task_leases,
    outcomes_per_command,
    wait_for_file,
    wait_until,
)

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


def test_three_activity_workflow_completes_on_a_real_worker(worker_factory: StartWorker) -> None:
    worker_factory()
    run = wf.three_steps.start(4)
    assert run.result(timeout=60) == {"value": 10, "text": "value is 10"}
    assert [e.type for e in run.history()] == [
        "run_started",
        "activity_scheduled", "activity_completed",
        "activity_scheduled", "activity_completed",
        "activity_scheduled", "activity_completed",
        "run_completed",
    ]  # fmt: skip
    assert run.status() == "completed"


def test_start_in_a_rolled_back_transaction_starts_nothing(worker_factory: StartWorker) -> None:
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queued = broker.llen("continuum")

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        wf.three_steps.start(1)
        assert WorkflowRun.objects.count() == 1  # visible inside the transaction only
        raise Rollback

    assert WorkflowRun.objects.count() == 0
    assert broker.llen("continuum") == queued  # no message was published
    worker_factory()
    committed = wf.three_steps.start(2)
    assert committed.result(timeout=60)["value"] == 6
    assert WorkflowRun.objects.count() == 1


def test_same_idempotency_key_from_two_processes_gives_one_run(tmp_path: Path) -> None:
    from tests.conftest import _test_database_url

    script = (
        "import django, sys, time; django.setup();"
        "from tests.testapp.workflows import three_steps;"
        "at = float(sys.argv[1]);"
        "time.sleep(max(0.0, at - time.time()));"
        "print(three_steps.options(idempotency_key='same-key').start(int(sys.argv[2])).id)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
    }
    at = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, at, str(n)], env=env, stdout=subprocess.PIPE, text=True
        )
        for n in (1, 2)
    ]
    ids = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(ids) == 1
    assert WorkflowRun.objects.filter(idempotency_key="same-key").count() == 1


def test_retries_then_handled_failure_on_a_real_worker(worker_factory: StartWorker) -> None:
    worker_factory()
    run = wf.retrying.start()
    assert run.result(timeout=60) == {
        "attempts": 3,
        "handled": {"activity": "tests.testapp.workflows.always_fails", "attempts": 2},
    }
    types = [e.type for e in run.history()]
    assert types.count("activity_failed") == 1  # retries are not journaled


def test_two_second_sleep_wakes(worker_factory: StartWorker) -> None:
    worker_factory()
    run = wf.sleeper.start(2)
    assert run.result(timeout=60) == "woke"
    history = run.history()
    fired = next(e for e in history if e.type == "timer_fired")
    scheduled = next(e for e in history if e.type == "timer_scheduled")
    assert fired.created_at is not None and scheduled.created_at is not None
    assert (fired.created_at - scheduled.created_at).total_seconds() >= 2


def test_signals_reach_a_waiting_run_once_per_dedupe_key(worker_factory: StartWorker) -> None:
    worker_factory()
    run = wf.collector.start(2)
    run.signal("item", {"n": 1}, dedupe_key="first")
    run.signal("item", {"n": 1}, dedupe_key="first")
    wait_until(lambda: run.status() == "suspended", what="the run to wait again")
    continuum.signal(run.id, "item", {"n": 2}, dedupe_key="second")
    assert run.result(timeout=60) == [{"n": 1}, {"n": 2}]


def test_lost_advance_message_is_recovered_by_the_sweeper(worker_factory: StartWorker) -> None:
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("continuum")
    run = wf.three_steps.start(3)
    assert broker.delete("continuum") == 1  # the broker lost the first advance message
    expire_run_lease(run.id)  # and its wake-up time is overdue
    worker_factory(beat=True)
    assert run.result(timeout=60)["value"] == 8


def test_kill_9_during_an_activity_second_worker_finishes(
    worker_factory: StartWorker, tmp_path: Path
) -> None:
    first = worker_factory("first")
    run = wf.blocking_activity.start(str(tmp_path))
    wait_for_file(tmp_path / "attempt-1")
    first.kill()

    expire_task_leases(run.id)  # the lease would lapse after LEASE_SECONDS; skip the wait
    worker_factory("second", beat=True)
    assert run.result(timeout=60) == {"attempt": 2, "after": 3}
    assert set(outcomes_per_command(run.id).values()) == {1}
    assert (tmp_path / "attempt-2").exists()


def test_kill_9_during_an_advance_second_worker_finishes(
    worker_factory: StartWorker, tmp_path: Path
) -> None:
    """The worker dies replaying an advance it holds the run's lease for (the claim that
    fired the run's timer committed; the advance did not)."""
    first = worker_factory("first")
    run = wf.stalling_after_timer.start(str(tmp_path))
    wait_for_file(tmp_path / "advance-started")
    first.kill()
    assert WorkflowRun.objects.get(pk=run.id).lease_owner  # the dead worker still holds it

    expire_run_lease(run.id)
    worker_factory("second", beat=True)
    assert run.result(timeout=60) == {"passed": "passed", "then": 2}
    assert set(outcomes_per_command(run.id).values()) == {1}
    seqs = [e.seq for e in run.history()]
    assert seqs == list(range(1, len(seqs) + 1))


def test_kill_9_during_a_speculated_advance_runs_the_activity_again(
    worker_factory: StartWorker, tmp_path: Path
) -> None:
    """The worker dies replaying the advance an activity's result leads to, before it wrote
    either (they commit together): the attempt is still the dead worker's and nothing else
    changed. Once its lease lapses, a second worker runs that activity again and finishes."""
    first = worker_factory("first")
    run = wf.stalling_advance.start(str(tmp_path))
    wait_for_file(tmp_path / "advance-started")
    first.kill()
    stored = WorkflowRun.objects.get(pk=run.id)
    assert not stored.lease_owner and stored.last_seq == 2  # run_started, activity_scheduled
    attempt = ActivityTask.objects.get(run_id=run.id)
    assert attempt.status == "running" and attempt.lease_owner  # its result was not written

    expire_task_leases(run.id)
    worker_factory("second", beat=True)
    assert run.result(timeout=60) == {"first": 2, "passed": "passed", "second": 3}
    assert ActivityTask.objects.get(pk=attempt.pk).attempt == 2
    assert set(outcomes_per_command(run.id).values()) == {1}


def test_incompatible_code_parks_the_run_on_drift(worker_factory: StartWorker) -> None:
    v1 = worker_factory("v1", env={"TESTAPP_VARIANT": "1"})
    run = continuum.start("tests.drifting")
    wait_until(
        lambda: run.status() == "suspended" and len(run.history()) == 3, what="a suspended run"
    )
    v1.stop()

    worker_factory("v2", env={"TESTAPP_VARIANT": "2"})
    history = run.history()
    run.signal("go")
    parked = wait_until(
        lambda: WorkflowRun.objects.filter(pk=run.id).exclude(park_reason="").first(),
        what="the run to be parked",
    )
    assert parked.status == "suspended"
    assert parked.park_reason == "drift"
    assert "step_c" in parked.park_detail and "step_a" in parked.park_detail
    assert run.history() == history  # not advanced


def test_sigterm_lets_the_running_activity_finish_and_holds_nothing(
    worker_factory: StartWorker, tmp_path: Path
) -> None:
    first = worker_factory("first")
    run = wf.pausing.start(str(tmp_path), 2.0)
    wait_for_file(tmp_path / "pausing-started")
    assert first.stop() == 0  # warm shutdown: SIGTERM, then the worker exits by itself
    assert "warm shutdown" in first.log().lower()

    task = ActivityTask.objects.get(run_id=run.id, activity__endswith="pausing_step")
    assert (task.status, task.result, task.lease_owner) == ("completed", "finished", "")
    stored = WorkflowRun.objects.get(pk=run.id)
    assert stored.lease_owner == ""  # no lease is left held by the stopped worker
    worker_factory("second")
    assert run.result(timeout=60) == ["finished", "a"]
