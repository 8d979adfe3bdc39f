"""Replay properties over random workflow programs (hypothesis), in memory.

Programs (tests/engine/replay_programs.py) mix activities, fan-outs, caught failures,
side effects, timers, signals with and without timeouts, patch markers, children,
compensations, attributes and ctx.random/uuid4/now. Each is run to its end once; then:

1. its complete history replays to the same ending and issues nothing new;
2. from every state the journal held (after each committed activation, and after each
   outcome written before the next one), advancing again issues what the original run
   issued: exactly its next activation from the state it advanced from, a prefix of it
   from an earlier state (it stops at the first wait whose outcome is not there yet);
3. changes to a recorded history are reported as drift, never silently accepted:

   * a command's identity renamed (the kind or the name in its command id);
   * two commands of different identity trading places in the command sequence
     (commands of the same kind and name are indistinguishable: arguments are not
     part of a command's identity);
   * a command's event dropped (an activity, compensation, timer, child, side effect,
     patch marker or received signal), or turned into an event of another type: one
     that holds no command's place, or another command's type than its kind's.

   Not drift, and not tested as such: reordering events without moving any command
   (positions are in the command ids), dropping an outcome (the run waits for it
   again), dropping the timer of a signal wait that the signal ended (the history of a
   signal that arrived before the wait looks exactly so).

The budget is fixed and derandomized for CI; CONTINUUM_HYPOTHESIS_EXAMPLES raises it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continuum_django import ReplayDriftError
from continuum_django.engine.definitions import registry
from continuum_django.engine.events import COMMAND_EVENTS, Event, EventType
from continuum_django.engine.replay import Outcome, advance
from continuum_django.testing import replay
from tests.engine.replay_programs import PROGRAMS, Recording, interpreter, record


def _budget() -> int:
    raw = os.environ.get("CONTINUUM_HYPOTHESIS_EXAMPLES", "100")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"CONTINUUM_HYPOTHESIS_EXAMPLES must be a whole number of examples, not {raw!r}"
        ) from None


settings.register_profile(
    "continuum-replay",
    max_examples=_budget(),
    derandomize=True,  # the same programs on every run: CI failures reproduce
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
BUDGET = settings.get_profile("continuum-replay")

# Events that hold a command's place in the command sequence.
PLACE_HOLDERS = COMMAND_EVENTS | {EventType.SIGNAL_RECEIVED}


# -- 1. the complete history replays to the same ending --------------------------------


@BUDGET
@given(PROGRAMS)
def test_a_complete_history_replays_to_the_same_ending(program: dict[str, Any]) -> None:
    recording = record(program)
    stored = recording.journal.runs[recording.run_id]
    history = recording.history()

    verdict = replay(interpreter, history)
    assert verdict.outcome == stored.status
    assert verdict.result == stored.result

    # Nothing in a complete history depends on the clock it is replayed at.
    later = _last_time(history) + dt.timedelta(days=1)
    again = advance(interpreter, run_id=recording.run_id, history=history, now=later)
    assert again.outcome == stored.status
    assert again.result == stored.result
    assert again.events == []


# -- 2. resuming from any state the journal held is deterministic ----------------------


@BUDGET
@given(PROGRAMS)
def test_advancing_from_any_stored_state_issues_what_the_run_issued(
    program: dict[str, Any],
) -> None:
    recording = record(program)
    for run_id in recording.runs:  # the program's run and its children
        _check_resumes(recording, run_id)


def _check_resumes(recording: Recording, run_id: str) -> None:
    history = recording.history(run_id)
    definition = registry.workflow(recording.journal.runs[run_id].workflow_name)
    stored_from = 1  # the first state held: run_started alone
    for committed in recording.activations(run_id):
        read = len(committed.history)
        assert tuple(history[:read]) == committed.history
        # Each state between the last commit and this activation's read: only outcomes
        # were appended in between, one write each.
        for length in range(stored_from, read + 1):
            again = advance(
                definition,
                run_id=run_id,
                history=history[:length],
                mailbox=committed.mailbox,
                now=committed.now,
            )
            issued = committed.activation.events
            assert again.outcome != Outcome.DRIFT, (length, again.drift)
            assert again.events == issued[: len(again.events)], length
            if length == read:
                assert again == committed.activation
        stored_from = read + len(committed.activation.events)
    # The last activation ended the run: nothing is appended after its end.
    assert stored_from == len(history)


# -- 3. a changed history is drift ------------------------------------------------------


@BUDGET
@given(PROGRAMS, st.data())
def test_a_renamed_command_is_drift(program: dict[str, Any], data: st.DataObject) -> None:
    recording = record(program)
    history = recording.history()
    commands = [i for i, e in enumerate(history) if e.type in PLACE_HOLDERS]
    if not commands:
        return  # a program of steps that journal nothing (rollbacks, attributes, random)
    index = data.draw(st.sampled_from(commands), label="renamed event")
    part = data.draw(st.sampled_from(["kind", "name"]), label="renamed part")
    position, kind, name = history[index].command_id.split(":", 2)
    renamed = f"{position}:{kind}x:{name}" if part == "kind" else f"{position}:{kind}:{name}x"
    mutated = _replace(history, index, command_id=renamed)

    _assert_replay_reports_drift(mutated)
    if _holds_place(history, index):  # the first event of its command: the one compared
        _assert_advance_reports_drift(recording, mutated)


@BUDGET
@given(PROGRAMS, st.data())
def test_commands_trading_places_is_drift(program: dict[str, Any], data: st.DataObject) -> None:
    recording = record(program)
    history = recording.history()
    places = {_identity(e): i for i, e in reversed(list(enumerate(history))) if _is_place(e)}
    by_position = sorted(places.values(), key=lambda i: _position(history[i]))
    pairs = [
        (a, b)
        for a in by_position
        for b in by_position
        if _position(history[a]) < _position(history[b])
        and _identity(history[a])[1] != _identity(history[b])[1]
    ]
    if not pairs:
        return  # a program of one command, or of one repeated command: nothing to swap
    first, second = data.draw(st.sampled_from(pairs), label="swapped commands")
    mutated = _swap(history, first, second)

    _assert_replay_reports_drift(mutated)
    _assert_advance_reports_drift(recording, mutated)


@BUDGET
@given(PROGRAMS, st.data())
def test_a_dropped_or_retyped_command_is_drift(
    program: dict[str, Any], data: st.DataObject
) -> None:
    recording = record(program)
    history = recording.history()
    candidates = [
        i
        for i, e in enumerate(history)
        if _is_place(e)
        and _holds_place(history, i)
        and not (e.type == EventType.TIMER_SCHEDULED and _identity(e)[1].startswith("signal:"))
    ]
    if not candidates:
        return
    index = data.draw(st.sampled_from(candidates), label="changed event")
    placeless = sorted(set(EventType) - PLACE_HOLDERS - {EventType.RUN_STARTED})
    if history[index].type == EventType.SIGNAL_RECEIVED and _failed(recording):
        # A signal turned into another outcome reads as a signal wait that timed out; a
        # failed run's recorded ending compares only its error type, not the value.
        placeless = [t for t in placeless if t not in _OUTCOMES]
    retyped = sorted(COMMAND_EVENTS - {history[index].type})
    if _identity(history[index])[1].startswith("signal:"):
        retyped = []  # a signal wait may journal a timer where its signal will go
    change = data.draw(st.sampled_from(["drop", *placeless, *retyped]), label="change")
    if change == "drop":
        mutated = _renumbered(history[:index] + history[index + 1 :])
    else:
        mutated = _replace(history, index, type=change)

    _assert_replay_reports_drift(mutated)


# -- helpers ----------------------------------------------------------------------------

_OUTCOMES = {
    EventType.ACTIVITY_COMPLETED,
    EventType.ACTIVITY_FAILED,
    EventType.COMPENSATION_COMPLETED,
    EventType.COMPENSATION_FAILED,
    EventType.CHILD_COMPLETED,
    EventType.CHILD_FAILED,
    EventType.CHILD_CANCELLED,
    EventType.TIMER_FIRED,
}


def _assert_replay_reports_drift(history: list[Event]) -> None:
    with pytest.raises(ReplayDriftError):
        replay(interpreter, history)


def _assert_advance_reports_drift(recording: Recording, history: list[Event]) -> None:
    """The worker's verb on the changed history parks the run instead of writing."""
    again = advance(interpreter, run_id=recording.run_id, history=history, now=_last_time(history))
    assert again.outcome == Outcome.DRIFT
    assert again.events == []


def _last_time(history: list[Event]) -> dt.datetime:
    return next(e.created_at for e in reversed(history) if e.created_at)


def _failed(recording: Recording) -> bool:
    return bool(recording.journal.runs[recording.run_id].status == "failed")


def _is_place(event: Event) -> bool:
    return event.type in PLACE_HOLDERS and bool(event.command_id)


def _position(event: Event) -> int:
    return int(event.command_id.split(":", 1)[0])


def _identity(event: Event) -> tuple[int, str]:
    """A command's position, and its kind and name."""
    position, identity = event.command_id.split(":", 1)
    return int(position), identity


def _holds_place(history: list[Event], index: int) -> bool:
    """Whether the event is the first of its command (a signal wait with a timeout
    records its timer, then the signal, under one command id)."""
    command_id = history[index].command_id
    return not any(e.command_id == command_id and _is_place(e) for e in history[:index])


def _replace(history: list[Event], index: int, **changes: Any) -> list[Event]:
    changed = list(history)
    changed[index] = dataclasses.replace(history[index], **changes)
    return changed


def _renumbered(history: list[Event]) -> list[Event]:
    """Contiguous seqs again, as a stored history has them."""
    return [dataclasses.replace(e, seq=n) for n, e in enumerate(history, start=1)]


def _swap(history: list[Event], first: int, second: int) -> list[Event]:
    """The commands at ``first`` and ``second`` trade places: each takes the other's
    position in its command id (its outcomes follow it) and its place in the journal."""
    a, b = history[first], history[second]
    (pa, ia), (pb, ib) = _identity(a), _identity(b)
    moved = {a.command_id: f"{pb}:{ia}", b.command_id: f"{pa}:{ib}"}
    changed = [
        dataclasses.replace(e, command_id=moved[e.command_id]) if e.command_id in moved else e
        for e in history
    ]
    changed[first], changed[second] = changed[second], changed[first]
    return _renumbered(changed)
