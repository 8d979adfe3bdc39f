"""Retry and release with real workers: a parked run resumes once capable code is deployed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

import continuum_django as continuum
from continuum_django.models import WorkflowRun
from continuum_django.operations import RunNotParked, release_version, retry_run
from tests.conftest import REPO_ROOT, _test_database_url

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


def parked(run_id: str, reason: str) -> bool:
    return WorkflowRun.objects.filter(pk=run_id, status="suspended", park_reason=reason).exists()


def test_retry_resumes_a_run_parked_on_drift_once_fixed_code_is_deployed(
    worker_factory: StartWorker,
) -> None:
    v1 = worker_factory("v1", env={"TESTAPP_VARIANT": "1"})
    run = continuum.start("tests.drifting")
    wait_until(lambda: run.status() == "suspended" and len(run.history()) == 3)
    v1.stop()
    v2 = worker_factory("v2", env={"TESTAPP_VARIANT": "2"})  # an incompatible deploy
    run.signal("go")
    wait_until(lambda: parked(run.id, "drift"), what="the run to park on drift")
    with pytest.raises(RunNotParked):
        retry_run(continuum.start("tests.waiter").id)  # a live run that is not parked
    v2.stop()

    worker_factory("fixed", env={"TESTAPP_VARIANT": "1"})  # the fix is deployed
    retry_run(run.id)
    assert run.result(timeout=60) == ["a", "b"]
    with pytest.raises(continuum.RunNotActive):
        retry_run(run.id)


def test_release_resumes_runs_parked_on_an_unknown_version(
    worker_factory: StartWorker, broker_url: str
) -> None:
    old = worker_factory("old", env={"TESTAPP_VARIANT": "1"})  # carries version 1 only
    # A web process already on the new code (variant 3) starts a version-2 run.
    script = (
        "import django; django.setup(); import continuum_django as c;"
        "print(c.start('tests.admin_versioned').id)"
    )
    env = {
        **os.environ,
        "TESTAPP_VARIANT": "3",
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
        "CELERY_BROKER_URL": broker_url,
    }
    started = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    wait_until(lambda: parked(run_id, "unknown_version"), what="the run to park")
    assert WorkflowRun.objects.get(pk=run_id).workflow_version == 2

    old.stop()
    # Released before the deploy starts (a starting worker would also resume it by itself).
    assert release_version("tests.admin_versioned", 1) == 0  # nothing parked on v1
    assert release_version("tests.admin_versioned", 2) == 1
    worker_factory("new", env={"TESTAPP_VARIANT": "3"})  # the deploy that carries version 2
    assert continuum.result(run_id, timeout=60) == "v2"
