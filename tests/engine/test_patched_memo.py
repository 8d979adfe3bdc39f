"""`ctx.patched()` answers once per run: a run keeps its first decision for a patch id."""

from __future__ import annotations

import datetime as dt
from typing import Any

from continuum_django.engine.events import Event
from continuum_django.engine.local import LocalRunner
from continuum_django.engine.replay import Outcome, advance
from tests.testapp.reliability import patched_loop, record

RECORD = record.name

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _event(seq: int, type_: str, command_id: str = "", payload: Any = None) -> Event:
    return Event(seq=seq, type=type_, command_id=command_id, payload=payload, created_at=NOW)


def _old_history(rounds: int) -> list[Event]:
    """Round one of a run recorded before the patch: record("old"), then a signal."""
    started = {"workflow": "tests.patched_loop", "version": 1, "seed": 1}
    started["input"] = {"args": [rounds], "kwargs": {}}
    return [
        _event(1, "run_started", payload=started),
        _event(2, "activity_scheduled", f"0:activity:{RECORD}", {"activity": RECORD}),
        _event(3, "activity_completed", f"0:activity:{RECORD}", {"result": "old"}),
        _event(4, "signal_received", "1:signal:next", {"name": "next", "payload": None}),
    ]


def test_an_old_run_keeps_the_old_branch_after_its_history_ends() -> None:
    activation = advance(patched_loop, run_id="r-old", history=_old_history(3), now=NOW)
    assert activation.outcome == Outcome.SUSPENDED
    assert [(e.type, e.command_id) for e in activation.events] == [
        ("activity_scheduled", f"2:activity:{RECORD}")
    ]
    assert activation.events[0].payload["args"] == ["old"]


def test_a_new_run_takes_the_new_branch_every_round_with_one_marker() -> None:
    runner = LocalRunner()
    run_id = runner.start(patched_loop, 3)
    for _ in range(3):
        runner.run_until_idle()
        runner.dispatcher.send(runner.journal.deliver_signal(run_id, "next", None, None))
    runner.run_until_idle()
    assert runner.journal.runs[run_id].result == ["new", "new", "new"]
    markers = [e for e in runner.journal.history(run_id) if e.type == "patch_marker"]
    assert len(markers) == 1
    # and the finished history replays without drift
    replayed = advance(patched_loop, run_id=run_id, history=runner.journal.history(run_id), now=NOW)
    assert replayed.outcome == Outcome.COMPLETED
    assert replayed.events == []


def test_a_history_that_took_the_new_branch_late_still_replays() -> None:
    """Runs recorded before the memo could hold a marker past their old rounds: the
    history stays the truth, so such a run replays the branch it took."""
    history = [
        *_old_history(2),
        _event(5, "patch_marker", "2:patch:new-step", {"patch": "new-step"}),
        _event(6, "activity_scheduled", f"3:activity:{RECORD}", {"activity": RECORD}),
        _event(7, "activity_completed", f"3:activity:{RECORD}", {"result": "new"}),
        _event(8, "signal_received", "4:signal:next", {"name": "next", "payload": None}),
    ]
    activation = advance(patched_loop, run_id="r-late", history=history, now=NOW)
    assert activation.outcome == Outcome.COMPLETED
    assert activation.result == ["old", "new"]
