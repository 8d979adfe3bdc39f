"""Updates on both journals: a request is taken once, answered once, and the answer is
journaled where the caller reads it."""

from __future__ import annotations

from typing import Any

from continuum_django.engine.updates import deliver_update, find_reply
from tests.testapp import updates as up

from .conftest import Harness


def _ask(harness: Harness, run: str, name: str, request_id: str, payload: Any) -> None:
    harness.sent.send(deliver_update(harness.journal, run, name, request_id, payload))
    harness.drain()


def _answers(harness: Harness, run: str) -> list[tuple[str, str, Any]]:
    return [
        (e.type, e.payload["request_id"], e.payload.get("result", e.payload.get("reason")))
        for e in harness.journal.history(run)
        if e.type in ("update_replied", "update_rejected")
    ]


def test_each_request_gets_its_answer(harness: Harness) -> None:
    run = harness.start(up.counter, 5)
    harness.drain()
    _ask(harness, run, "add", "r1", 2)
    _ask(harness, run, "add", "r2", "three")
    _ask(harness, run, "add", "r3", 3)
    assert _answers(harness, run) == [
        ("update_replied", "r1", 2),
        ("update_rejected", "r2", "'three' is not a whole number"),
        ("update_replied", "r3", 5),
    ]
    assert harness.run(run)["status"] == "completed"
    assert harness.run(run)["result"] == 5
    found = find_reply(harness.journal.history(run), "r3")
    assert found is not None and found.command_id.endswith(":reply:add")


def test_a_repeated_request_id_is_delivered_once(harness: Harness) -> None:
    run = harness.start(up.counter, 10)
    harness.drain()
    _ask(harness, run, "add", "same", 4)
    _ask(harness, run, "add", "same", 4)  # the caller retried: nothing new arrives
    _ask(harness, run, "add", "other", 1)
    assert _answers(harness, run) == [
        ("update_replied", "same", 4),
        ("update_replied", "other", 5),
    ]
    types = harness.types(run)
    assert types.count("signal_received") == 2


def test_a_request_waits_in_the_mailbox_until_taken(harness: Harness) -> None:
    run = harness.start(up.counter, 1)
    _ask(harness, run, "add", "early", 1)  # sent before the run's first advance
    assert _answers(harness, run) == [("update_replied", "early", 1)]
    assert harness.run(run)["status"] == "completed"


def test_a_second_answer_to_one_request_fails_the_run(harness: Harness) -> None:
    run = harness.start(up.answers_twice)
    harness.drain()
    _ask(harness, run, "ask", "r", None)
    assert harness.run(run)["status"] == "failed"
    assert "already answered" in harness.run(run)["error"]["message"]
    assert _answers(harness, run) == [("update_replied", "r", 1)]  # the first answer stands


def test_a_wait_for_a_request_can_time_out(harness: Harness) -> None:
    run = harness.start(up.patient, 60)
    harness.drain()
    harness.make_timers_due(run)
    harness.sent.send(harness.journal.fire_due_timers(10))
    harness.drain()
    assert harness.run(run)["result"] == "no request"
