"""Run deadlines in the pure engine: the timeout option, a child's, and timed-out replays."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from continuum_django import ContinuumError, InvalidTimeout, WorkflowFailed, WorkflowTimedOut
from continuum_django.engine.definitions import check_timeout
from continuum_django.engine.events import EventType
from continuum_django.engine.local import LocalRunner, new_run
from continuum_django.testing import WorkflowEnvironment, replay
from tests.golden import workflows as g
from tests.testapp import deadlines as dl

GOLDEN = Path(__file__).parent.parent / "golden" / "run_timed_out.json"


@pytest.mark.parametrize(
    ("given", "seconds"), [(90, 90.0), (1.5, 1.5), (dt.timedelta(hours=2), 7200.0), (None, None)]
)
def test_a_timeout_is_seconds_or_a_timedelta(given: Any, seconds: float | None) -> None:
    assert check_timeout(given) == seconds


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (0, "positive"),
        (-1, "negative"),
        (float("inf"), "at most"),
        ("60", "seconds (int or float) or a timedelta"),
        (True, "seconds (int or float) or a timedelta"),
    ],
)
def test_a_bad_timeout_names_what_was_wrong(bad: Any, says: str) -> None:
    with pytest.raises(InvalidTimeout, match=r"timeout") as refused:
        check_timeout(bad)
    assert says in str(refused.value)
    assert isinstance(refused.value, ContinuumError) and isinstance(refused.value, ValueError)


def test_the_timed_out_golden_history_still_replays() -> None:
    verdict = replay(g.late, GOLDEN)
    assert verdict.ok and verdict.outcome == "failed"


def test_replay_of_a_timed_out_history_ends_it_failed_wherever_the_code_was() -> None:
    runner = LocalRunner()
    run_id, _, dispatch = runner.journal.create_run(new_run(dl.parent, [3600], timeout=10))
    runner.dispatcher.send(dispatch)
    runner.run_until_idle(skip_time=False)
    runner.clock.advance(11)
    runner.dispatcher.send(runner.journal.time_out_runs(10))
    runner.run_until_idle(skip_time=False)
    run = runner.journal.runs[run_id]
    assert run.status == "failed" and run.error["type"] == "continuum.WorkflowTimedOut"
    history = runner.journal.history(run_id)
    assert [e.type for e in history][-2:] == [EventType.RUN_TIMED_OUT, EventType.RUN_FAILED]
    assert replay(dl.parent, history).ok


def test_a_child_takes_only_the_timeout_option() -> None:
    runner = LocalRunner()
    run_id = runner.start(dl.parent_with_keyed_child)
    runner.run_until_idle()
    error = runner.journal.runs[run_id].error
    assert error["type"].endswith("WorkflowUsageError")
    assert "a child takes only timeout=" in error["message"]
    assert "idempotency_key" in error["message"]


def test_the_test_kit_honours_a_deadline_before_the_next_timer() -> None:
    env = WorkflowEnvironment()
    run = env.start(dl.sleeper.options(timeout=dt.timedelta(minutes=10)), 3600)
    started = env.now()
    with pytest.raises(WorkflowTimedOut, match="deadline") as ended:
        run.result()
    assert isinstance(ended.value, WorkflowFailed)
    assert env.now() == started + dt.timedelta(minutes=10)  # the clock stopped there
    assert [e.type for e in run.history()][-2:] == ["run_timed_out", "run_failed"]


def test_the_test_kit_leaves_a_run_that_ends_in_time_alone() -> None:
    env = WorkflowEnvironment()
    run = env.start(dl.sleeper.options(timeout=dt.timedelta(hours=2)), 3600)
    assert run.result() == "woke"
