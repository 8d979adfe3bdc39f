"""The client API on real Postgres: bad input gets a named error and changes nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections
from django.test import override_settings

import continuum_django as continuum
from continuum_django import (
    ContinuumError,
    PayloadError,
    RunNotActive,
    RunNotFound,
    UnknownWorkflow,
)
from continuum_django.journal.runs import end_notice
from continuum_django.models import Signal, WorkflowEvent, WorkflowRun
from continuum_django.worker import runtime
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db


def finish(run: continuum.RunHandle) -> None:
    """Advance the run in this process until it settles (no worker needed for these tests)."""
    engine = runtime()
    for _ in range(20):
        engine.advance_run(run.id)
        tasks = run.get().activity_tasks.filter(status="scheduled")
        if not tasks and run.get().is_terminal:
            return
        for task in tasks:
            engine.execute_activity(task.id)


def test_start_writes_the_run_and_its_first_event() -> None:
    run = continuum.start(wf.three_steps, args=[1], attributes={"customer": "c-9"})
    stored = continuum.get_run(run.id)
    assert stored.status == "pending"
    assert stored.workflow_name == "tests.three_steps"
    assert stored.attributes == {"customer": "c-9"}
    assert [e.type for e in run.history()] == ["run_started"]


def test_unknown_workflow_name() -> None:
    with pytest.raises(UnknownWorkflow, match=r"'nope'.*known: .*tests\.three_steps"):
        continuum.start("nope")
    assert not WorkflowRun.objects.exists()


def test_non_json_arguments_are_refused_at_the_call_site() -> None:
    with pytest.raises(PayloadError, match=r"input of workflow 'tests\.three_steps'.*object"):
        wf.three_steps.start(object())  # type: ignore[arg-type]
    assert not WorkflowRun.objects.exists()


@override_settings(CONTINUUM={"MAX_PAYLOAD_BYTES": 64})
def test_payloads_over_the_size_limit_are_refused() -> None:
    with pytest.raises(PayloadError, match="over the limit of 64 bytes"):
        wf.three_steps.start("x" * 100)  # type: ignore[arg-type]
    run = wf.waiter.start()
    with pytest.raises(PayloadError, match="payload of signal 'go'"):
        run.signal("go", "y" * 100)
    assert not Signal.objects.exists()


def test_signal_and_cancel_of_a_finished_run_change_nothing() -> None:
    run = wf.three_steps.start(1)
    finish(run)
    assert run.status() == "completed"
    events = WorkflowEvent.objects.count()
    with pytest.raises(RunNotActive, match="is completed"):
        run.signal("go", 1)
    with pytest.raises(RunNotActive, match="already completed"):
        run.cancel()
    assert WorkflowEvent.objects.count() == events
    assert not Signal.objects.exists()


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "00000000-0000-4000-8000-000000000000", 42])
def test_unknown_run_ids(bad_id: object) -> None:
    for call in (
        lambda: continuum.get_run(bad_id),
        lambda: continuum.signal(bad_id, "go"),
        lambda: continuum.cancel(bad_id),
        lambda: continuum.result(bad_id, timeout=0),
    ):
        with pytest.raises(RunNotFound):
            call()


def test_result_raises_for_failed_cancelled_and_unfinished_runs() -> None:
    run = wf.sleeper.start(3600)
    finish(run)
    with pytest.raises(continuum.ResultTimeout):
        run.result(timeout=0.05)
    run.cancel(reason="stop", terminate=True)
    with pytest.raises(continuum.WorkflowCancelled):
        run.result(timeout=1)

    failing = wf.direct_call_workflow.start()
    finish(failing)
    with pytest.raises(continuum.WorkflowFailed, match="WorkflowUsageError"):
        failing.result(timeout=1)


def test_every_error_is_a_continuum_error() -> None:
    for name in continuum.__all__:
        value = getattr(continuum, name)
        if isinstance(value, type) and issubclass(value, Exception) and name != "ResultTimeout":
            assert issubclass(value, ContinuumError), name


def test_signal_contract_rejects_undeclared_names_and_bad_payloads() -> None:
    run = wf.declared_signals.start()
    with pytest.raises(
        continuum.SignalRejected, match=r"declares no signal 'approved'.*any, approve, note"
    ):
        run.signal("approved", {"ok": True})
    with pytest.raises(continuum.SignalRejected, match="takes a dict payload, not str"):
        run.signal("approve", "yes")
    with pytest.raises(continuum.SignalRejected, match="takes a str payload, not int"):
        run.signal("note", 3)
    assert not Signal.objects.exists()  # the mailbox is unchanged
    run.signal("approve", {"by": "ops"})
    run.signal("any", [1, 2])
    assert Signal.objects.count() == 2


def test_bad_signal_contracts_are_refused_at_registration() -> None:
    from continuum_django.engine.exceptions import RegistrationError

    with pytest.raises(RegistrationError, match="a contract entry is None"):

        @continuum.workflow(name="tests.bad_contract", signals={"x": 3})
        def bad(ctx: object) -> None: ...


@pytest.mark.django_db(transaction=True)
def test_result_reads_the_run_again_when_the_notice_of_its_end_wakes_it() -> None:
    run = wf.three_steps.start(4)
    sent: list[str] = []

    def finish_after_the_first_read(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        answer = execute(sql, params, many, context)
        sent.append(sql)
        if sql.startswith("SELECT") and len(sent) == 2:  # result() read it, still pending
            worker = threading.Thread(target=lambda: (finish(run), connections.close_all()))
            worker.start()
            worker.join()  # the run ended, announced to this connection's LISTEN
        return answer

    with connection.execute_wrapper(finish_after_the_first_read):
        value = run.result(timeout=10)
    expected = {"value": 10, "text": "value is 10"}
    assert value == WorkflowRun.objects.get(pk=run.id).result == expected
    # LISTEN, the read that found it pending, the read once woken (the notice is a hint).
    assert [sql.split()[0] for sql in sent] == ["LISTEN", "SELECT", "SELECT", "UNLISTEN"]


def test_the_notice_of_an_end_names_the_chain_and_the_run_only() -> None:
    run = wf.three_steps.start(1)
    stored = WorkflowRun.objects.get(pk=run.id)
    stored.status, stored.result = "completed", {"secret": "s3cr3t"}
    assert json.loads(end_notice(stored)) == {"chain": run.id, "run": run.id}
