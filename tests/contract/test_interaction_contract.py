"""Signal-with-start and published state: the same behaviour from both journals."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_django.engine.exceptions import RunNotActive
from continuum_django.engine.local import new_run
from tests.testapp import interaction

from .conftest import Harness


def signal_with_start(
    harness: Harness, name: str, payload: Any, *args: Any, key: str = "k", dedupe: str | None = None
) -> tuple[str, bool]:
    new = new_run(interaction.collector, args, {}, idempotency_key=key)
    run_id, created, dispatch = harness.journal.signal_with_start(new, name, payload, dedupe)
    harness.sent.send(dispatch)
    return run_id, created


def published(harness: Harness, run_id: str) -> dict[str, Any]:
    row = harness.run(run_id)
    return dict(row["state"] if "state" in row else row["published_state"])


def test_signal_with_start_starts_the_run_with_the_signal_in_its_mailbox(
    harness: Harness,
) -> None:
    run_id, created = signal_with_start(harness, "add", "first", 2)
    assert created
    harness.drain()
    assert harness.types(run_id) == ["run_started", "signal_received", "state_published"]
    assert harness.run(run_id)["status"] == "suspended"
    assert published(harness, run_id) == {"count": 1}


def test_signal_with_start_signals_the_run_holding_the_key(harness: Harness) -> None:
    run_id, _ = signal_with_start(harness, "add", "first", 2)
    harness.drain()
    again, created = signal_with_start(harness, "add", "second", 99)
    assert (again, created) == (run_id, False)
    harness.drain()
    run = harness.run(run_id)
    assert run["status"] == "completed"
    assert run["result"] == ["first", "second"]
    assert run["input"]["args"] == [2]  # the run keeps the arguments it started with
    assert published(harness, run_id) == {"count": 2}


def test_signal_with_start_before_the_first_advance_delivers_both(harness: Harness) -> None:
    run_id, _ = signal_with_start(harness, "add", "a", 2)
    signal_with_start(harness, "add", "b", 2)
    harness.drain()
    assert harness.run(run_id)["result"] == ["a", "b"]


def test_a_repeated_dedupe_key_is_delivered_once(harness: Harness) -> None:
    run_id, _ = signal_with_start(harness, "add", "a", 2, dedupe="d-1")
    signal_with_start(harness, "add", "a again", 2, dedupe="d-1")
    harness.drain()
    assert harness.run(run_id)["status"] == "suspended"
    assert published(harness, run_id) == {"count": 1}


def test_signal_with_start_on_an_ended_run_raises_and_starts_nothing(harness: Harness) -> None:
    run_id, _ = signal_with_start(harness, "add", "only", 1)
    harness.drain()
    assert harness.run(run_id)["status"] == "completed"
    history = harness.journal.history(run_id)
    with pytest.raises(RunNotActive, match=f"run {run_id} is completed"):
        signal_with_start(harness, "add", "late", 1)
    assert harness.journal.history(run_id) == history
    # The key still names that run: a plain start returns it too.
    assert harness.start(interaction.collector, 1, idempotency_key="k") == run_id


def test_published_state_keeps_each_keys_last_value(harness: Harness) -> None:
    run_id = harness.start(interaction.progress, 2)
    harness.drain()
    assert published(harness, run_id) == {
        "stage": "waiting",
        "done": 2,
        "card": {"card_number": "4111111111111111", "last4": "1111"},
    }
    harness.sent.send(harness.journal.deliver_signal(run_id, "go", None, None))
    harness.drain()
    assert harness.run(run_id)["status"] == "completed"
    assert published(harness, run_id)["stage"] == "finished"
    assert harness.types(run_id).count("state_published") == 6


def test_continue_as_new_carries_the_state_to_the_successor(harness: Harness) -> None:
    run_id = harness.start(interaction.relay, 1)
    harness.drain()
    assert published(harness, run_id) == {"first_lap": "seen", "lap": 1}
    successor = harness.journal.history(run_id)[-1].payload["next_run_id"]
    tip = harness.journal.history(successor)[-1].payload["next_run_id"]
    assert published(harness, successor) == {"first_lap": "seen", "lap": 2}
    assert published(harness, tip) == {"first_lap": "seen", "lap": 3}
    assert harness.run(tip)["status"] == "completed"
