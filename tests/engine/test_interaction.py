"""Published state and signal-with-start in the engine and the test kit (no database)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from continuum_django import ReplayDriftError, RunNotActive, WorkflowFailed, workflow
from continuum_django.engine.context import MAX_STATE_KEY_CHARS, EngineConfig
from continuum_django.engine.events import Event, EventType
from continuum_django.engine.replay import advance
from continuum_django.testing import WorkflowEnvironment, replay
from tests.golden import workflows as golden
from tests.testapp import interaction

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def golden_history(name: str) -> list[Event]:
    return [Event.from_json(e) for e in json.loads((GOLDEN / f"{name}.json").read_text())["events"]]


def test_published_state_is_each_keys_last_value_and_is_journaled_once() -> None:
    env = WorkflowEnvironment()
    run = env.start(interaction.progress, 2)
    assert run.state == {
        "stage": "waiting",
        "done": 2,
        "card": {"card_number": "4111111111111111", "last4": "1111"},
    }
    run.signal("go")
    assert run.result() == 2
    assert run.state["stage"] == "finished"
    # Four activations replayed the early publishes; each was journaled exactly once.
    published = [e for e in run.history() if e.type == EventType.STATE_PUBLISHED]
    assert [(e.command_id, e.payload["key"]) for e in published] == [
        ("0:publish:stage", "stage"),
        ("2:publish:done", "done"),
        ("4:publish:done", "done"),
        ("5:publish:card", "card"),
        ("6:publish:stage", "stage"),
        ("8:publish:stage", "stage"),
    ]


def test_replay_writes_nothing_again_and_reports_no_state_change() -> None:
    history = golden_history("publish")
    *before_end, _ = history
    activation = advance(golden.publish, run_id="r", history=before_end, now=LATER)
    assert activation.outcome == "completed"
    assert all(e.type != EventType.STATE_PUBLISHED for e in activation.events)
    assert activation.state is None  # nothing new published: the run's row is left alone


def test_an_activation_that_publishes_carries_the_whole_state() -> None:
    history = golden_history("publish")[:4]  # started, stage, activity scheduled + completed
    activation = advance(golden.publish, run_id="r", history=history, now=LATER)
    assert [e.payload for e in activation.events if e.type == EventType.STATE_PUBLISHED] == [
        {"key": "stage", "value": "shipped"},
        {"key": "total", "value": 42},
    ]
    assert activation.state == {"stage": "shipped", "total": 42}


def test_a_changed_publish_key_is_replay_drift() -> None:
    def renamed_fn(ctx: Any) -> int:
        ctx.publish("phase", "charging")
        return 0

    renamed = dataclasses.replace(golden.publish, fn=renamed_fn)  # not registered
    activation = advance(renamed, run_id="r", history=golden_history("publish")[:3], now=LATER)
    assert activation.outcome == "drift"
    assert "0:publish:phase" in (activation.drift or "")
    assert "0:publish:stage" in (activation.drift or "")
    with pytest.raises(ReplayDriftError):
        replay(renamed, GOLDEN / "publish.json")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("int", "publish needs a str key, not int"),
        ("empty", "publish needs a non-empty key"),
        ("long", f"over the limit of {MAX_STATE_KEY_CHARS}"),
        ("nul", "publish key contains a NUL character"),
    ],
)
def test_a_bad_key_fails_the_run_with_a_clear_error(case: str, message: str) -> None:
    run = WorkflowEnvironment().start(interaction.bad_publisher, case)
    with pytest.raises(WorkflowFailed, match=message):
        run.result()
    assert run.state == {}


def test_values_go_through_the_codec_and_the_size_limit() -> None:
    @workflow(name="kit.publish_big")
    def big(ctx: Any, size: int) -> str:
        ctx.publish("blob", "x" * size)
        return "ok"

    env = WorkflowEnvironment(config=EngineConfig(max_payload_bytes=200))
    assert env.start(big, 10).result() == "ok"
    with pytest.raises(WorkflowFailed, match=r"value published as 'blob'.*over the limit of 200"):
        env.start(big, 500).result()

    @workflow(name="kit.publish_many")
    def many(ctx: Any) -> None:
        for key in range(20):  # each small, together over the limit
            ctx.publish(f"key-{key}", "y" * 20)

    with pytest.raises(WorkflowFailed, match=r"published state .* over the limit of 200"):
        env.start(many).result()

    @workflow(name="kit.publish_object")
    def unencodable(ctx: Any) -> None:
        ctx.publish("when", object())

    with pytest.raises(WorkflowFailed, match=r"value published as 'when'.*object"):
        env.start(unencodable).result()


def test_datetimes_round_trip_through_the_state() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)

    @workflow(name="kit.publish_time")
    def timed(ctx: Any) -> None:
        ctx.publish("at", moment)

    run = WorkflowEnvironment().start(timed)
    assert run.state == {"at": moment}


def test_continue_as_new_carries_the_state_over() -> None:
    env = WorkflowEnvironment()
    first = env.start(interaction.relay, 1)
    env.run()
    assert first.state == {"first_lap": "seen", "lap": 1}
    runs = env.runner.journal.runs
    tip = next(r for r in runs.values() if r.status == "completed")
    assert {k: v for k, v in tip.state.items()} == {"first_lap": "seen", "lap": 3}
    started = env.runner.journal.history(tip.id)[0].payload
    assert started["state"] == {"first_lap": "seen", "lap": 2}


def test_signal_with_start_starts_once_and_delivers_every_signal() -> None:
    env = WorkflowEnvironment()
    run = env.signal_with_start(interaction.collector, "add", "a", 3, idempotency_key="k")
    again = env.signal_with_start(interaction.collector, "add", "b", 99, idempotency_key="k")
    assert again.id == run.id
    assert len(env.runner.journal.runs) == 1
    assert run.state == {"count": 2}
    env.signal_with_start(interaction.collector, "add", "c", 3, idempotency_key="k")
    assert run.result() == ["a", "b", "c"]
    history = run.history()
    assert [e.type for e in history[:2]] == ["run_started", "signal_received"]

    with pytest.raises(RunNotActive, match="cannot take signal 'add'"):
        env.signal_with_start(interaction.collector, "add", "d", 3, idempotency_key="k")
    assert len(env.runner.journal.runs) == 1
    assert run.history() == history
