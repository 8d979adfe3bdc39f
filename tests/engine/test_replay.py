"""Replay: command identity, drift, suspension, cancellation and determinism, in memory."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from continuum_django import activity, workflow
from continuum_django.engine.events import Event
from continuum_django.engine.exceptions import ActivityFailed, CancellationRequested
from continuum_django.engine.local import LocalRunner
from continuum_django.engine.replay import advance


@activity(name="engine.echo")
def echo(value: Any) -> Any:
    return value


@activity(name="engine.boom")
def boom() -> None:
    raise ValueError("boom")


def run(workflow_def: Any, *args: Any) -> tuple[LocalRunner, str]:
    runner = LocalRunner()
    run_id = runner.start(workflow_def, *args)
    runner.run_until_idle()
    return runner, run_id


@workflow(name="engine.fan")
def fan(ctx: Any) -> Any:
    first, second = ctx.start_activity(echo, 1), ctx.start_activity(echo, 2)
    return ctx.wait_all(first, second)


def test_wait_all_returns_results_in_argument_order() -> None:
    runner, run_id = run(fan)
    assert runner.journal.runs[run_id].result == [1, 2]


@workflow(name="engine.fan_fail")
def fan_fail(ctx: Any) -> Any:
    handles = [ctx.start_activity(echo, 1), ctx.start_activity(boom), ctx.start_activity(echo, 3)]
    try:
        ctx.wait_all(*handles)
    except ActivityFailed as failure:
        return [failure.activity, handles[0].result(), handles[2].result()]


def test_wait_all_raises_the_first_failure_and_keeps_each_result() -> None:
    runner, run_id = run(fan_fail)
    assert runner.journal.runs[run_id].result == ["engine.boom", 1, 3]


@workflow(name="engine.any")
def any_of(ctx: Any) -> Any:
    slow, fast = ctx.start_activity(echo, "slow"), ctx.start_activity(echo, "fast")
    return ctx.wait_any(slow, fast).result()


def test_wait_any_returns_the_first_in_journal_order() -> None:
    runner = LocalRunner()
    run_id = runner.start(any_of)
    runner.runtime.advance_run(runner.dispatcher.pending.pop(0)[1])
    slow, fast = (item[1] for item in runner.dispatcher.pending)
    runner.dispatcher.pending.clear()
    runner.runtime.execute_activity(fast)  # "fast" finishes first
    runner.runtime.execute_activity(slow)
    runner.dispatcher.pending.clear()
    runner.runtime.advance_run(run_id)
    assert runner.journal.runs[run_id].result == "fast"


@workflow(name="engine.deterministic")
def deterministic(ctx: Any) -> Any:
    values = [str(ctx.uuid4()), ctx.random(), ctx.now().isoformat()]
    ctx.activity(echo, 0)
    return [*values, str(ctx.uuid4())]


def test_uuid_random_and_now_replay_to_the_same_values() -> None:
    runner, run_id = run(deterministic)
    history = runner.journal.history(run_id)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    again = advance(deterministic, run_id=run_id, history=history[:-1], now=later)
    assert again.outcome == "completed"
    assert again.result == runner.journal.runs[run_id].result
    assert again.events[-1].type == "run_completed"


@workflow(name="engine.swallower")
def swallower(ctx: Any) -> str:
    try:  # noqa: SIM105 - the mistake under test
        ctx.activity(echo, 1)
    except:  # noqa: E722
        pass
    return "carried on"


def test_swallowed_suspension_fails_the_run_loudly() -> None:
    runner, run_id = run(swallower)
    stored = runner.journal.runs[run_id]
    assert stored.status == "failed"
    assert "swallowed the engine's suspension" in stored.error["message"]


@workflow(name="engine.direct_call")
def direct_call(ctx: Any) -> Any:
    return echo(1)


def test_calling_an_activity_directly_in_workflow_code_is_refused() -> None:
    runner, run_id = run(direct_call)
    error = runner.journal.runs[run_id].error
    assert "ctx.activity(echo, ...)" in error["message"]
    assert echo(5) == 5  # outside a workflow it is the plain function


def make_history(*command_ids: str) -> list[Event]:
    started = Event(
        seq=1,
        type="run_started",
        payload={"input": {"args": [], "kwargs": {}}, "seed": 1, "attributes": {}},
    )
    scheduled = [
        Event(seq=n, type="activity_scheduled", command_id=cid)
        for n, cid in enumerate(command_ids, start=2)
    ]
    return [started, *scheduled]


@workflow(name="engine.one_step")
def one_step(ctx: Any) -> Any:
    return ctx.activity(echo, 1)


def test_a_different_command_at_a_recorded_position_is_drift() -> None:
    history = make_history("0:activity:engine.boom")
    activation = advance(one_step, run_id="r", history=history, now=dt.datetime.now(dt.UTC))
    assert activation.outcome == "drift"
    assert "'0:activity:engine.echo'" in activation.drift
    assert "'0:activity:engine.boom'" in activation.drift
    assert activation.events == []


def test_recorded_commands_the_code_no_longer_issues_are_drift() -> None:
    history = make_history("0:activity:engine.echo", "1:activity:engine.echo")
    history.insert(
        2,
        Event(
            seq=99,
            type="activity_completed",
            command_id="0:activity:engine.echo",
            payload={"result": 1},
        ),
    )
    activation = advance(one_step, run_id="r", history=history, now=dt.datetime.now(dt.UTC))
    assert activation.outcome == "drift"
    assert "1:activity:engine.echo" in activation.drift


@workflow(name="engine.cleanup")
def cleanup(ctx: Any) -> Any:
    try:
        ctx.sleep(3600)
    except CancellationRequested:
        ctx.activity(echo, "cleaned")
        return "cleanup returned"
    return "slept"


def test_cancellation_is_delivered_once_and_cleanup_may_run_activities() -> None:
    runner = LocalRunner()
    run_id = runner.start(cleanup)
    runner.run_until_idle(skip_time=False)
    runner.dispatcher.send(runner.journal.request_cancel(run_id, "stop", terminate=False))
    runner.run_until_idle(skip_time=False)
    stored = runner.journal.runs[run_id]
    assert stored.status == "cancelled"
    types = [e.type for e in runner.journal.history(run_id)]
    assert types == [
        "run_started", "timer_scheduled", "cancel_requested",
        "activity_scheduled", "activity_completed", "run_cancelled",
    ]  # fmt: skip


@workflow(name="engine.month")
def month(ctx: Any) -> str:
    ctx.sleep(dt.timedelta(days=30))
    return "a month later"


def test_fake_clock_skips_long_timers() -> None:
    runner, run_id = run(month)
    assert runner.journal.runs[run_id].result == "a month later"


@workflow(name="engine.attrs")
def attrs(ctx: Any) -> None:
    ctx.set_attributes(customer="c-9", total=3)
    ctx.activity(echo, 1)
    ctx.set_attributes(total=4)


def test_attributes_are_rebuilt_on_replay_and_stored() -> None:
    runner, run_id = run(attrs)
    assert runner.journal.runs[run_id].attributes == {"customer": "c-9", "total": 4}


def test_logger_is_silent_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    @workflow(name="engine.logs")
    def logs(ctx: Any) -> None:
        ctx.logger.warning("before")
        ctx.activity(echo, 1)
        ctx.logger.warning("after")

    caplog.set_level("WARNING", logger="continuum.workflow.engine.logs")
    run(logs)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("continuum.workflow")]
    assert messages == ["before", "after"]


@workflow(name="engine.cancel_while_waiting")
def cancel_while_waiting(ctx: Any) -> str:
    ctx.on_rollback(echo, "undo")
    try:
        ctx.wait_signal("never")  # no timeout: this wait journals nothing while it waits
    except CancellationRequested:
        ctx.compensate()
        raise
    return "signalled"


def test_cancel_during_an_untimed_signal_wait_replays_without_drift() -> None:
    runner = LocalRunner()
    run_id = runner.start(cancel_while_waiting)
    runner.run_until_idle()
    runner.dispatcher.send(runner.journal.request_cancel(run_id, "stop", terminate=False))
    runner.run_until_idle()
    stored = runner.journal.runs[run_id]
    assert (stored.status, stored.park_reason) == ("cancelled", "")
    assert [e.type for e in runner.journal.history(run_id)][-3:] == [
        "compensation_scheduled", "compensation_completed", "run_cancelled",
    ]  # fmt: skip


@workflow(name="engine.five_echoes")
def five_echoes(ctx: Any) -> Any:
    total = 0
    for n in range(5):
        total += ctx.activity(echo, n)
    return total


def test_an_extended_history_index_matches_one_built_from_scratch() -> None:
    from continuum_django.engine.context import HistoryIndex

    runner, run_id = run(five_echoes)
    history = runner.journal.history(run_id)
    assert runner.journal.runs[run_id].result == 10
    for cut in range(1, len(history)):
        built, grown = HistoryIndex.of(history), HistoryIndex.of(history[:cut])
        assert grown.extends_to(history)
        grown = grown.extended(history)
        assert (grown.recorded, grown.outcomes, grown.cancel, grown.ended) == (
            built.recorded,
            built.outcomes,
            built.cancel,
            built.ended,
        )
    assert HistoryIndex.of(history).ended and not HistoryIndex.of(history[:3]).ended


def test_replay_never_reuses_the_index_of_another_history_of_the_same_run() -> None:
    from dataclasses import replace

    runner, run_id = run(five_echoes)
    history = runner.journal.history(run_id)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ended = advance(five_echoes, run_id=run_id, history=history, now=now)
    assert (ended.outcome, ended.result) == ("completed", 10)
    # A shorter history (a stale worker's), then one sharing its first and its fourth event
    # objects but with other results in between: each replays as itself.
    shorter = advance(five_echoes, run_id=run_id, history=history[:4], now=now)
    assert shorter.outcome == "suspended"
    shifted = [
        replace(e, payload={"result": e.payload["result"] + 1})
        if e.type == "activity_completed"
        else e
        for e in history[:-1]
    ]
    other = advance(five_echoes, run_id=run_id, history=shifted, now=now)
    assert shifted[0] is history[0] and shifted[3] is history[3]
    assert (other.outcome, other.result) == ("completed", 15)


def test_a_speculated_result_does_not_cost_the_next_replay_its_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A speculated advance replays with the attempt's result as a provisional event; the
    history after the write holds the written event instead (another object). The index
    kept for the run must still be extended by the next replay, not rebuilt from scratch."""
    from dataclasses import replace

    from continuum_django.engine.context import HistoryIndex

    runner, run_id = run(five_echoes)
    history = runner.journal.history(run_id)  # started, then scheduled/completed pairs
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    built = []
    of = HistoryIndex.of.__func__  # type: ignore[attr-defined]

    def counting(cls: type[HistoryIndex], events: Any) -> HistoryIndex:
        built.append(len(events))
        return of(cls, events)  # type: ignore[no-any-return]

    monkeypatch.setattr(HistoryIndex, "of", classmethod(counting))
    run_id = "speculated-" + run_id  # nothing kept for it yet
    results = []
    for cut in (3, 5, 7, 9):  # each step: the history so far and a provisional result
        provisional = replace(history[cut - 1], created_at=None)  # not the written object
        speculated = [*history[: cut - 1], provisional]
        results.append(advance(five_echoes, run_id=run_id, history=speculated, now=now))
    assert [r.outcome for r in results] == ["suspended"] * 4
    assert built == [2]  # the first replay builds; each later one extends what was kept
