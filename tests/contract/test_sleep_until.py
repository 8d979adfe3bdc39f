"""`ctx.sleep_until(moment)`: a durable timer to a point in time, on both journals."""

from __future__ import annotations

import datetime as dt

from continuum_django.engine.local import LocalRunner
from tests.testapp import reliability as rl

from .conftest import Harness

MOMENT = dt.datetime(2031, 5, 17, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def test_the_timer_is_due_at_the_moment_given(harness: Harness) -> None:
    run = harness.start(rl.sleeps_until, MOMENT)
    harness.drain()
    (scheduled,) = [e for e in harness.journal.history(run) if e.type == "timer_scheduled"]
    assert dt.datetime.fromisoformat(scheduled.payload["fire_at"]) == MOMENT
    assert harness.run(run)["status"] == "suspended"
    harness.make_timers_due(run)
    harness.sent.send(harness.journal.fire_due_timers(10))
    harness.drain()
    assert harness.run(run)["result"] == "woke"


def test_a_moment_already_past_fires_at_once() -> None:
    runner = LocalRunner()
    run = runner.start(rl.sleeps_until, dt.datetime(2001, 1, 1, tzinfo=dt.UTC))
    runner.run_until_idle(skip_time=False)
    assert runner.journal.runs[run].result == "woke"


def test_a_naive_datetime_is_refused_with_the_fix() -> None:
    runner = LocalRunner()
    run = runner.start(rl.sleeps_until, dt.datetime(2031, 1, 1))
    runner.run_until_idle()
    error = runner.journal.runs[run].error
    assert error["type"].endswith("WorkflowUsageError")
    assert "timezone-aware" in error["message"]
