"""The public test kit: in-process runs on a skipping clock, signals, fakes, and replay()."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from continuum_django import ActivityFailed, ReplayDriftError, WorkflowFailed, activity, workflow
from continuum_django.engine.definitions import WorkflowDefinition
from continuum_django.engine.exceptions import ResultTimeout
from continuum_django.testing import WorkflowEnvironment, load_history, replay
from tests.testapp import workflows as wf

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


@activity(name="kit.charge")
def charge(amount: int) -> dict[str, Any]:
    raise AssertionError("the real charge must not run in these tests")


@activity(name="kit.note")
def note(text: str) -> str:
    return text.upper()


@workflow(name="kit.subscription")
def subscription(ctx: Any, months: int) -> dict[str, Any]:
    started = ctx.now()
    for _ in range(months):
        ctx.sleep(dt.timedelta(days=30))
    return {"started": started.isoformat(), "ended": ctx.now().isoformat()}


def test_a_thirty_day_sleep_completes_without_waiting() -> None:
    env = WorkflowEnvironment()
    began, wall = env.now(), time.monotonic()
    run = env.start(subscription, 1)
    assert run.status == "suspended"  # start() does not move time
    result = run.result()
    assert time.monotonic() - wall < 5
    assert env.now() - began >= dt.timedelta(days=30)
    ended = dt.datetime.fromisoformat(result["ended"])
    assert ended - dt.datetime.fromisoformat(result["started"]) == dt.timedelta(days=30)
    assert [e.type for e in run.history()].count("timer_fired") == 1


def test_advance_moves_the_clock_only_as_far_as_asked() -> None:
    env = WorkflowEnvironment()
    run = env.start(wf.sleeper, 3600)
    env.advance(dt.timedelta(minutes=59))
    assert run.status == "suspended"
    env.advance(60)
    assert run.status == "completed"
    assert run.result() == "woke"


@workflow(name="kit.review")
def review(ctx: Any) -> Any:
    decision = ctx.wait_signal("decision", timeout=dt.timedelta(hours=24), default="timed out")
    return ctx.activity(note, decision)


def test_a_signal_reaches_the_waiting_run() -> None:
    env = WorkflowEnvironment()
    run = env.start(review)
    env.advance(dt.timedelta(hours=23))
    run.signal("decision", "approved")
    assert run.result() == "APPROVED"


def test_without_the_signal_the_timeout_fires_on_the_skipping_clock() -> None:
    env = WorkflowEnvironment()
    run = env.start(review)
    assert run.result() == "TIMED OUT"
    assert env.now() - dt.datetime(2026, 1, 1, tzinfo=dt.UTC) >= dt.timedelta(hours=24)


def test_a_run_waiting_for_a_signal_nobody_sends_says_so() -> None:
    env = WorkflowEnvironment()
    run = env.start(wf.collector, 1)
    with pytest.raises(ResultTimeout, match="a signal"):
        run.result()
    run.signal("item", {"n": 1})
    assert run.result() == [{"n": 1}]


@workflow(name="kit.checkout")
def checkout(ctx: Any, amount: int) -> Any:
    try:
        return ctx.activity(charge, amount)
    except ActivityFailed as failure:
        return {"declined": failure.error_message}


def test_activities_can_be_replaced_by_fakes() -> None:
    env = WorkflowEnvironment(activities={charge: lambda amount: {"id": f"ch-{amount}"}})
    assert env.start(checkout, 5).result() == {"id": "ch-5"}

    def declined(amount: int) -> None:
        raise RuntimeError("card declined")

    env = WorkflowEnvironment(activities={"kit.charge": declined})
    assert env.start(checkout, 5).result() == {"declined": "card declined"}


def test_a_failing_workflow_raises_workflow_failed() -> None:
    env = WorkflowEnvironment()
    with pytest.raises(WorkflowFailed, match="WorkflowUsageError"):
        env.start(wf.direct_call_workflow).result()


def test_a_recorded_run_replays_and_a_changed_one_drifts(tmp_path: Path) -> None:
    env = WorkflowEnvironment()
    run = env.start(wf.three_steps, 4)
    assert run.result() == {"value": 10, "text": "value is 10"}
    path = tmp_path / "three_steps.json"
    path.write_text(json.dumps(run.to_golden()))

    verdict = replay(wf.three_steps, path)
    assert verdict.ok and verdict.outcome == "completed"

    def reordered(ctx: Any, x: int) -> Any:
        b = ctx.activity(wf.double, x)  # the recorded first command was add_one
        return ctx.activity(wf.describe, ctx.activity(wf.add_one, b))

    changed = WorkflowDefinition(fn=reordered, name="tests.three_steps", version=1)
    with pytest.raises(ReplayDriftError) as drift:
        replay(changed, path)
    assert drift.value.first_difference == {
        "position": 0,
        "recorded": "0:activity:tests.testapp.workflows.add_one",
        "issued": "0:activity:tests.testapp.workflows.double",
        "seq": 2,
    }


def test_a_different_result_from_the_same_history_is_drift() -> None:
    def other_text(ctx: Any, x: int) -> Any:
        a = ctx.activity(wf.add_one, x)
        b = ctx.activity(wf.double, a)
        return {**ctx.activity(wf.describe, b), "extra": True}

    changed = WorkflowDefinition(fn=other_text, name="tests.three_steps", version=1)
    with pytest.raises(ReplayDriftError, match="now returns"):
        replay(changed, GOLDEN / "three_steps.json")


def test_replay_does_not_run_side_effects_past_the_history() -> None:
    calls: list[int] = []

    def probing(ctx: Any, x: int) -> Any:
        a = ctx.activity(wf.add_one, x)
        ctx.side_effect(lambda: calls.append(1))
        return a

    live = load_history(GOLDEN / "three_steps.json")["events"][:3]  # add_one done, nothing after
    changed = WorkflowDefinition(fn=probing, name="tests.three_steps", version=1)
    assert replay(changed, live).outcome == "suspended"
    assert calls == []


@pytest.mark.parametrize("name", ["three_steps", "sleeper", "collector"])
def test_golden_histories_still_replay(name: str) -> None:
    document = load_history(GOLDEN / f"{name}.json")
    definition = getattr(wf, name)
    verdict = replay(definition, GOLDEN / f"{name}.json")
    assert verdict.outcome == document["outcome"]["status"]
