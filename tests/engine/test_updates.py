"""Updates in the pure engine: replay of answers, drift, and the testing kit's `update`."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from continuum_django import UpdateRejected, UpdateTimeout, WorkflowFailed, workflow
from continuum_django.engine.events import Event
from continuum_django.engine.exceptions import RegistrationError
from continuum_django.engine.replay import advance
from continuum_django.testing import WorkflowEnvironment
from tests.golden import workflows as golden
from tests.testapp import updates as up

GOLDEN = Path(__file__).parent.parent / "golden" / "updates_replied_rejected_timed_out.json"
LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def golden_history() -> tuple[str, list[Event]]:
    document = json.loads(GOLDEN.read_text())
    return document["run_id"], [Event.from_json(e) for e in document["events"]]


def test_replay_does_not_answer_a_request_again() -> None:
    run_id, history = golden_history()
    upto_reply = history[:3]  # run_started, the request taken, its reply
    activation = advance(golden.updates, run_id=run_id, history=upto_reply, now=LATER)
    assert activation.drift is None
    assert activation.outcome == "suspended"
    assert [e.type for e in activation.events] == []  # waits for the next request


def test_answering_differently_on_replay_is_drift() -> None:
    @workflow(name="tests.updates.always_rejects")
    def always_rejects(ctx: Any) -> None:
        first = ctx.wait_update("set")
        first.reject("no")
        ctx.wait_update("set")

    run_id, history = golden_history()
    changed = replace(golden.updates, fn=always_rejects.fn)
    activation = advance(changed, run_id=run_id, history=history[:3], now=LATER)
    assert activation.drift is not None
    assert "update_rejected" in str(activation.drift)
    assert "update_replied" in str(activation.drift)


def test_the_testing_kit_sends_updates_and_returns_replies() -> None:
    env = WorkflowEnvironment()
    run = env.start(up.counter, 5)
    assert run.update("add", 2) == 2
    with pytest.raises(UpdateRejected, match="is not a whole number") as rejected:
        run.update("add", "x")
    assert rejected.value.reason == "'x' is not a whole number"
    with pytest.raises(UpdateRejected, match="must not be negative"):
        run.update("add", -2)
    assert run.update("add", 3, request_id="last") == 5
    assert run.update("add", 3, request_id="last") == 5  # the same answer, not a new one
    assert run.result() == 5
    assert [e.type for e in run.history()].count("signal_received") == 3


def test_the_testing_kit_says_when_no_answer_came() -> None:
    env = WorkflowEnvironment()
    run = env.start(up.unanswered)
    with pytest.raises(UpdateTimeout, match="did not answer update 'ask'"):
        run.update("ask", "hello?")
    run.signal("finish")
    assert run.result() == "hello?"


def test_bad_update_names_and_validators_are_refused() -> None:
    with pytest.raises(RegistrationError, match="already has a validator"):
        up.counter.update_validator("add")(lambda payload: None)
    with pytest.raises(RegistrationError, match="needs an update name"):
        up.counter.update_validator("")

    @workflow(name="tests.updates.nameless_wait")
    def nameless(ctx: Any) -> None:
        ctx.wait_update("")

    run = WorkflowEnvironment().start(nameless)
    with pytest.raises(WorkflowFailed, match="wait_update needs an update name"):
        run.result()


def test_the_request_carries_id_and_payload() -> None:
    env = WorkflowEnvironment()

    @workflow(name="tests.updates.echo_request")
    def echo(ctx: Any) -> dict[str, Any]:
        request = ctx.wait_update("who")
        request.reply({"id": request.id, "name": request.name, "payload": request.payload})
        return {"answered": request.id}

    run = env.start(echo)
    stamp = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    reply = run.update("who", {"at": stamp}, request_id="req-9")
    assert reply == {"id": "req-9", "name": "who", "payload": {"at": stamp}}
    assert run.result() == {"answered": "req-9"}


def test_a_workflow_with_validators_stays_hashable() -> None:
    assert {up.counter: "ok"}[up.counter] == "ok"
    assert "add" in up.counter.update_validators
