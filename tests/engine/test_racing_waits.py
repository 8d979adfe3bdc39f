"""Racing waits: timers and signal waiters in wait_any / wait_all, replayed exactly."""

from __future__ import annotations

from typing import Any

from continuum_django.engine.local import LocalRunner
from continuum_django.engine.replay import Outcome, advance
from tests.testapp import reliability as rl


def _signal(runner: LocalRunner, run_id: str, name: str, payload: Any) -> None:
    runner.dispatcher.send(runner.journal.deliver_signal(run_id, name, payload, None))


def _replays_exactly(runner: LocalRunner, run_id: str, definition: Any) -> None:
    run = runner.journal.runs[run_id]
    again = advance(definition, run_id=run_id, history=run.events, now=runner.clock.now())
    assert again.outcome == Outcome.COMPLETED
    assert again.events == []
    assert again.result == run.result


def test_the_signal_wins_when_it_comes_before_the_timer() -> None:
    runner = LocalRunner()
    run_id = runner.start(rl.approval_or_reminder)
    runner.run_until_idle(skip_time=False)
    _signal(runner, run_id, "approval", "yes")
    runner.run_until_idle(skip_time=False)
    assert runner.journal.runs[run_id].result == {"approved": "yes"}
    types = [e.type for e in runner.journal.history(run_id)]
    assert "timer_fired" not in types
    _replays_exactly(runner, run_id, rl.approval_or_reminder)


def test_the_timer_wins_and_the_signal_waits_for_the_next_wait() -> None:
    runner = LocalRunner()
    run_id = runner.start(rl.approval_or_reminder)
    runner.run_until_idle()  # the clock jumps to the timer: it fires first
    assert runner.journal.runs[run_id].status == "suspended"
    _signal(runner, run_id, "approval", "late yes")
    runner.run_until_idle()
    assert runner.journal.runs[run_id].result == {"reminded": True, "then": "late yes"}
    _replays_exactly(runner, run_id, rl.approval_or_reminder)


def test_a_signal_buffered_when_the_timer_already_fired_stays_buffered() -> None:
    """Journal order decides: the timer fired before the run looked at its mailbox."""
    runner = LocalRunner()
    run_id = runner.start(rl.approval_or_reminder)
    runner.run_until_idle(skip_time=False)
    runner.clock.advance(3601)
    runner.dispatcher.send(runner.journal.fire_due_timers(10))  # fired, not yet replayed
    _signal(runner, run_id, "approval", "both at once")
    runner.run_until_idle(skip_time=False)
    assert runner.journal.runs[run_id].result == {"reminded": True, "then": "both at once"}


def test_wait_all_takes_each_signal_and_the_timer() -> None:
    runner = LocalRunner()
    run_id = runner.start(rl.both_signals)
    runner.run_until_idle(skip_time=False)
    _signal(runner, run_id, "b", 2)
    runner.run_until_idle(skip_time=False)
    assert runner.journal.runs[run_id].status == "suspended"
    _signal(runner, run_id, "a", 1)
    runner.run_until_idle()
    assert runner.journal.runs[run_id].result == [1, 2, None]
    _replays_exactly(runner, run_id, rl.both_signals)


def test_a_signal_waiter_races_an_activity() -> None:
    runner = LocalRunner()
    stopped = runner.start(rl.signal_or_activity)
    _signal(runner, stopped, "stop", None)  # buffered before the first activation
    runner.run_until_idle()
    assert runner.journal.runs[stopped].result == "stopped"

    worked = runner.start(rl.signal_or_activity)
    runner.run_until_idle()
    assert runner.journal.runs[worked].result == "work"
    _replays_exactly(runner, worked, rl.signal_or_activity)
