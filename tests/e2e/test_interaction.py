"""Signal-with-start from several processes and published state, on real workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import continuum_django as continuum
from continuum_django.models import Signal, WorkflowRun
from tests.testapp import interaction

from .helpers import expire_task_leases, wait_for_file, wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]

CALLERS = 4
SCRIPT = (
    "import django, sys, time; django.setup();"
    "from tests.testapp.interaction import collector;"
    "at, n = float(sys.argv[1]), int(sys.argv[2]);"
    "time.sleep(max(0.0, at - time.time()));"  # start together: more overlap, same outcome
    f"print(collector.signal_with_start('add', n, {CALLERS}, idempotency_key='e2e-basket').id)"
)


def test_processes_racing_signal_with_start_make_one_run_a_worker_finishes(
    worker_factory: StartWorker,
) -> None:
    from tests.conftest import _test_database_url

    worker_factory()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
    }
    at = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, at, str(n)], env=env, stdout=subprocess.PIPE, text=True
        )
        for n in range(CALLERS)
    ]
    ids = {p.communicate(timeout=90)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(ids) == 1
    run_id = ids.pop()
    assert WorkflowRun.objects.count() == 1
    assert Signal.objects.filter(run_id=run_id).count() == CALLERS
    assert sorted(continuum.result(run_id, timeout=60)) == list(range(CALLERS))
    assert continuum.state(run_id) == {"count": CALLERS}


def test_published_state_is_readable_while_the_run_waits(worker_factory: StartWorker) -> None:
    worker_factory()
    run = interaction.progress.start(2)
    wait_until(lambda: run.state().get("stage") == "waiting", what="the run to publish 'waiting'")
    assert continuum.get_run(run.id).state["done"] == 2
    assert run.status() == "suspended"
    run.signal("go")
    assert run.result(timeout=60) == 2
    assert continuum.state(run.id)["stage"] == "finished"
    published = [e for e in run.history() if e.type == "state_published"]
    assert [e.payload["key"] for e in published] == [
        "stage",
        "done",
        "done",
        "card",
        "stage",
        "stage",
    ]


def test_state_published_before_a_kill_9_survives_and_is_not_written_twice(
    worker_factory: StartWorker, tmp_path: Path
) -> None:
    first = worker_factory("first")
    run = interaction.publish_around_a_crash.start(str(tmp_path))
    wait_for_file(tmp_path / "attempt-1")
    assert run.state() == {"stage": "charging"}  # committed with the activation, before
    first.kill()

    expire_task_leases(run.id)  # the lease would lapse after LEASE_SECONDS; skip the wait
    worker_factory("second", beat=True)
    assert run.result(timeout=60) == 2
    assert run.state() == {"stage": "charged"}
    published = [e.command_id for e in run.history() if e.type == "state_published"]
    assert published == ["0:publish:stage", "2:publish:stage"]
