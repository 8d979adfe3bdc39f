"""Setup mistakes reported when they are made, with how to fix them: no Celery app loaded,
SQLite without IMMEDIATE transactions, workflows where workers do not look, arguments that do
not fit, reused idempotency keys and signals nothing waits for (on real Postgres)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core import checks
from django.test.utils import override_settings

import continuum_django as continuum
from continuum_django import workflow
from continuum_django.models import Signal, WorkflowRun
from tests.testapp import versioned

ROOT = Path(__file__).resolve().parents[2]


@workflow(name="setup.checks.stray")
def stray(ctx: Any, order_id: str, *, express: bool = False) -> str:
    return ctx.wait_signal("approve")


@workflow(name="setup.checks.declared", signals={"approve": None})
def declared(ctx: Any) -> Any:
    return ctx.wait_signal("approve")


def found(check_id: str) -> list[checks.CheckMessage]:
    return [m for m in checks.run_checks(tags=["continuum"]) if m.id == check_id]


def without_celery_app(*args: str) -> subprocess.CompletedProcess[str]:
    """Run Python in a project that never imports a Celery app (tests/projects)."""
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "no_celery_settings",
        "PYTHONPATH": str(ROOT / "tests" / "projects"),
    }
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


# -- continuum.E020: no Celery app -------------------------------------------------------


def test_a_project_that_never_imports_its_celery_app_fails_the_check() -> None:
    checked = without_celery_app("-m", "django", "check")
    assert checked.returncode == 1
    assert "(continuum.E020) No Celery app is loaded" in checked.stderr
    assert "import it in the project package's __init__.py" in checked.stderr


def test_a_start_without_a_celery_app_is_refused_before_anything_is_stored() -> None:
    code = (
        "import django; django.setup()\n"
        "from continuum_django import start, workflow\n"
        "from django.core.exceptions import ImproperlyConfigured\n"
        "wf = workflow(name='setup.nocelery')(lambda ctx: 1)\n"
        "try:\n"
        "    start(wf)\n"
        "except ImproperlyConfigured as exc:\n"
        "    print('refused:', exc)\n"
    )
    ran = without_celery_app("-c", code)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("refused: No Celery app is loaded")
    assert "(continuum.E020)" in ran.stdout


def test_the_suites_celery_app_passes_the_check() -> None:
    assert found("continuum.E020") == []


# -- continuum.E021: SQLite without IMMEDIATE ---------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ["continuum.E021"]),
        ({"transaction_mode": "DEFERRED"}, ["continuum.E021"]),
        ({"transaction_mode": "IMMEDIATE", "timeout": 20}, []),
    ],
)
def test_sqlite_without_immediate_transactions_is_an_error(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], expected: list[str]
) -> None:
    database = settings.DATABASES["default"]
    monkeypatch.setitem(database, "ENGINE", "django.db.backends.sqlite3")
    monkeypatch.setitem(database, "OPTIONS", options)
    with override_settings(DEBUG=True):  # not only in production, not only with --deploy
        messages = found("continuum.E021")
    assert [m.id for m in messages] == expected
    if messages:
        assert "'database is locked'" in messages[0].msg
        assert "'transaction_mode': 'IMMEDIATE'" in (messages[0].hint or "")


def test_postgres_is_not_asked_for_a_transaction_mode() -> None:
    assert found("continuum.E021") == []


# -- continuum.W022: a workflow where workers do not look ---------------------------------


def test_a_workflow_defined_outside_the_workflow_modules_is_warned() -> None:
    (message,) = [m for m in found("continuum.W022") if "'setup.checks.stray'" in m.msg]
    assert message.obj == f"{__name__}.stray"
    assert f"is defined in {__name__!r}, which is not imported when Django starts" in message.msg
    assert "parks its runs as unknown_version" in message.msg
    assert "an installed app's workflows module (<app>/workflows.py)" in (message.hint or "")
    with override_settings(CONTINUUM={"WORKFLOW_MODULES": ["shop.flows"]}):
        (listed,) = [m for m in found("continuum.W022") if "'setup.checks.stray'" in m.msg]
    assert "one of CONTINUUM['WORKFLOW_MODULES'] (shop.flows)" in (listed.hint or "")


def test_workflows_loaded_at_start_up_are_not_warned() -> None:
    warned = {m.obj for m in found("continuum.W022")}
    # tests.testapp.workflows imports tests.testapp.versioned: loaded at start-up too.
    assert f"{versioned.__name__}.versioned_v1" not in warned


# -- start(): arguments, idempotency keys; signal() names ---------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "starting",
    [
        lambda: continuum.start(stray, args=["o-1", "o-2"]),
        lambda: stray.start(),  # type: ignore[call-arg]
        lambda: stray.options(idempotency_key="k").start("o-1", fast=True),  # type: ignore[call-arg]
    ],
)
def test_a_start_whose_arguments_do_not_fit_raises_type_error_and_stores_nothing(
    starting: Any,
) -> None:
    with pytest.raises(TypeError, match=re.escape("workflow 'setup.checks.stray' cannot take")):
        starting()
    assert not WorkflowRun.objects.exists()


@pytest.mark.django_db
def test_a_reused_idempotency_key_with_other_arguments_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="continuum")
    first = stray.options(idempotency_key="order-1").start("o-1", express=True)
    again = stray.options(idempotency_key="order-1").start("o-1", express=True)
    assert again == first and caplog.records == []
    other = stray.options(idempotency_key="order-1").start("o-2")
    assert other == first  # SPEC §4: the existing run, whatever the arguments
    (record,) = caplog.records
    assert record.name == "continuum"
    assert record.getMessage() == (
        "idempotency key 'order-1' is reused with different arguments: start() returns the "
        f"existing run {first.id}, which keeps the arguments it was started with; use a new "
        "key to start another run"
    )
    assert WorkflowRun.objects.get().input["args"] == ["o-1"]  # nothing stored changed


@pytest.mark.django_db
def test_a_signal_the_workflow_never_waits_for_is_logged_and_still_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="continuum")
    run = stray.start("o-1")
    run.signal("approve", True)
    assert caplog.records == []
    run.signal("aprove", True)
    (record,) = caplog.records
    assert record.getMessage().startswith(
        f"signal to run {run.id}: workflow 'setup.checks.stray' never waits for a signal "
        "'aprove' (its code waits for 'approve')"
    )
    # Warned, not refused: the name may be waited for in a helper the lint does not read.
    assert sorted(Signal.objects.filter(run_id=run.id).values_list("name", flat=True)) == [
        "approve",
        "aprove",
    ]


@pytest.mark.django_db
def test_a_workflow_with_declared_signals_is_not_second_guessed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="continuum")
    declared.start().signal("approve", 1)
    assert caplog.records == []
