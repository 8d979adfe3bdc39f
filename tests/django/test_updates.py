"""`update()` on real Postgres: validation before anything is stored, one delivery and one
answer per request id, and clear errors for runs that cannot answer."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse

import continuum_django as continuum
from continuum_django import (
    ContinuumError,
    PayloadError,
    RunNotActive,
    RunNotFound,
    UpdateRejected,
    UpdateTimeout,
)
from continuum_django.models import Signal, WorkflowEvent, WorkflowRun
from continuum_django.worker import runtime
from tests.testapp import updates as up

pytestmark = pytest.mark.django_db(transaction=True)


def advance(run: continuum.RunHandle) -> None:
    """Advance the run once in this process (no worker needed for these tests)."""
    runtime().advance_run(run.id)


def answers(run: continuum.RunHandle) -> list[str]:
    return [e.type for e in run.history() if e.type.startswith("update_")]


def test_a_validator_that_raises_rejects_and_stores_nothing() -> None:
    run = up.counter.start(10)
    with pytest.raises(UpdateRejected, match="must not be negative") as caught:
        continuum.update(run.id, "add", -3, timeout=5)
    assert isinstance(caught.value.__cause__, ValueError)
    assert caught.value.reason == "amounts must not be negative, not -3"
    assert not Signal.objects.exists()
    assert [e.type for e in run.history()] == ["run_started"]


def test_an_answer_is_read_from_the_journal_and_a_retry_gets_it_again() -> None:
    run = up.counter.start(10)
    advance(run)
    with pytest.raises(UpdateTimeout, match="did not answer update 'add'") as caught:
        run.update("add", 4, timeout=0, request_id="req-1")  # delivered; nobody answered yet
    assert isinstance(caught.value, TimeoutError) and caught.value.request_id == "req-1"
    advance(run)  # the run takes the request and replies
    assert run.update("add", 4, timeout=5, request_id="req-1") == 4
    assert run.update("add", 4, timeout=5, request_id="req-1") == 4  # not delivered again
    assert Signal.objects.filter(run_id=run.id).count() == 1
    assert answers(run) == ["update_replied"]


def test_a_rejection_by_the_workflow_raises_its_reason() -> None:
    run = up.counter.start(10)
    advance(run)
    with pytest.raises(UpdateTimeout):
        continuum.update(run.id, "add", "lots", timeout=0, request_id="bad")
    advance(run)
    with pytest.raises(UpdateRejected, match="'lots' is not a whole number") as caught:
        continuum.update(run.id, "add", "lots", request_id="bad")
    assert caught.value.reason == "'lots' is not a whole number"
    assert answers(run) == ["update_rejected"]


def test_a_waiting_caller_wakes_when_the_answer_is_journaled() -> None:
    run = up.counter.start(10)
    advance(run)
    got: list[object] = []

    def ask() -> None:
        try:
            got.append(continuum.update(run.id, "add", 2, timeout=60, request_id="wait"))
        finally:
            connection.close()

    caller = threading.Thread(target=ask)
    caller.start()
    deadline = time.monotonic() + 30
    while not Signal.objects.filter(dedupe_key="wait").exists():
        assert time.monotonic() < deadline, "the request never arrived"
        time.sleep(0.02)
    advance(run)
    caller.join(30)
    assert got == [2]


def test_one_answer_per_request_is_enforced_by_the_database() -> None:
    run = up.counter.start(10)
    advance(run)
    with pytest.raises(UpdateTimeout):
        continuum.update(run.id, "add", 1, timeout=0, request_id="once")
    advance(run)
    stored = WorkflowRun.objects.get(pk=run.id)
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkflowEvent.objects.create(
            run=stored,
            seq=stored.last_seq + 1,
            type="update_replied",
            command_id="99:reply:add",
            payload={"request_id": "once", "name": "add", "result": 7},
            created_at=stored.created_at,
        )
    assert answers(run) == ["update_replied"]


def test_updates_to_runs_that_cannot_answer_raise_clear_errors() -> None:
    with pytest.raises(RunNotFound):
        continuum.update("00000000-0000-0000-0000-000000000000", "add", 1, timeout=1)
    with pytest.raises(RunNotFound, match="not a run id"):
        continuum.update("nope", "add", 1, timeout=1)
    run = up.counter.start(10)
    continuum.cancel(run.id, terminate=True)
    with pytest.raises(RunNotActive, match="cannot take update 'add'"):
        continuum.update(run.id, "add", 1, timeout=1)
    assert not Signal.objects.exists()


def test_a_run_that_ends_without_answering_raises_run_not_active() -> None:
    run = up.unanswered.start()
    advance(run)
    with pytest.raises(UpdateTimeout):
        continuum.update(run.id, "ask", "hello", timeout=0, request_id="lost")
    advance(run)  # takes the request, does not answer
    run.signal("finish")
    advance(run)
    assert run.result(timeout=5) == "hello"
    with pytest.raises(RunNotActive, match="without answering update 'ask'"):
        continuum.update(run.id, "ask", "hello", timeout=5, request_id="lost")


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda run: continuum.update(run, "", 1), "update name must not be empty"),
        (lambda run: continuum.update(run, 7, 1), "update name must be a str"),
        (lambda run: continuum.update(run, "add", 1, request_id=""), "request_id must not be"),
        (lambda run: continuum.update(run, "add", 1, timeout=-1), "timeout must not be neg"),
        (lambda run: continuum.signal(run, "update:add", 1), "which update requests use"),
    ],
)
def test_bad_input_is_refused_by_name(call: object, problem: str) -> None:
    run = up.counter.start(10)
    with pytest.raises(ValueError, match=problem):
        call(run.id)  # type: ignore[operator]
    assert not Signal.objects.exists()


def test_a_payload_over_the_size_limit_is_refused_before_anything_is_stored() -> None:
    run = up.counter.start(10)
    with (
        override_settings(CONTINUUM={"MAX_PAYLOAD_BYTES": 100}),
        pytest.raises(PayloadError, match="payload of update 'add'"),
    ):
        continuum.update(run.id, "add", "x" * 200, timeout=1)
    assert not Signal.objects.exists()


def test_a_timeout_may_be_a_timedelta() -> None:
    run = up.counter.start(10)
    with pytest.raises(UpdateTimeout, match="within 0 seconds"):
        run.update("add", 1, timeout=dt.timedelta(0))
    with pytest.raises(TypeError, match="update timeout must be seconds"):
        run.update("add", 1, timeout="soon")  # type: ignore[arg-type]


def test_an_update_inside_a_transaction_is_refused() -> None:
    run = up.counter.start(10)
    with pytest.raises(ContinuumError, match="inside a transaction"), transaction.atomic():
        continuum.update(run.id, "add", 1, timeout=5)
    assert not Signal.objects.exists()


def test_an_answer_is_announced_to_listening_callers() -> None:
    run = up.counter.start(10)
    advance(run)
    with pytest.raises(UpdateTimeout):
        continuum.update(run.id, "add", 1, timeout=0, request_id="heard")
    listener = connections.create_connection("default")
    try:
        with listener.cursor() as cursor:
            cursor.execute("LISTEN continuum_run_ended")
        advance(run)  # journals the answer
        notices = [
            json.loads(note.payload)
            for note in listener.connection.notifies(timeout=5, stop_after=1)
        ]
    finally:
        listener.close()
    chain = str(WorkflowRun.objects.get(pk=run.id).chain_root_id)
    assert notices == [{"chain": chain, "run": run.id, "update": "heard"}]


def test_the_admin_shows_requests_and_answers_readably_and_redacted(admin_client: Client) -> None:
    run = up.reply_then_block.start("/nonexistent")
    advance(run)
    with pytest.raises(UpdateTimeout):
        continuum.update(run.id, "ask", {"card_number": "4111111111111111"}, timeout=0)
    advance(run)  # takes the request, replies with the payload echoed, schedules an activity
    assert answers(run) == ["update_replied"]
    page = reverse("admin:continuum_workflowrun_change", args=[run.id])
    with override_settings(CONTINUUM={"REDACT": "tests.django.redact.secrets"}):
        html = admin_client.get(page).content.decode()
    assert "update_replied" in html and "1:reply:ask" in html
    assert 'class="cn-bar cn-update cn-replied"' in html
    assert ">update ask</text>" in html
    assert "4111111111111111" not in html and "••••••" in html


def test_updates_follow_a_continue_as_new_chain() -> None:
    first = up.rolling.start(0)
    advance(first)
    with pytest.raises(UpdateTimeout):
        first.update("bump", timeout=0, request_id="a")
    advance(first)  # replies, then continues as new
    second = continuum.RunHandle(str(WorkflowRun.objects.get(continued_from=first.id).id))
    advance(second)
    assert first.update("bump", timeout=5, request_id="a") == 1  # found in the first run
    with pytest.raises(UpdateTimeout):
        first.update("bump", timeout=0, request_id="b")  # the chain's tip takes it
    advance(second)
    assert first.update("bump", timeout=5, request_id="b") == 2
    assert second.update("bump", timeout=5, request_id="a") == 1  # not delivered again
    assert answers(first) == ["update_replied"] and answers(second) == ["update_replied"]
    assert Signal.objects.filter(dedupe_key="a").count() == 1
