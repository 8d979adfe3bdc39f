"""Random workflow programs for the replay properties: their steps, one interpreter, a recorder.

A program is JSON (the interpreter workflow's input), so one registered workflow runs
every program the strategy draws. `record` drives it to its end over an in-memory
journal that remembers every activation it committed, with the history, mailbox and
clock it was computed from, so the properties can replay from each of those points.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from continuum_django import RetryPolicy, activity, workflow
from continuum_django.engine.clock import FakeClock
from continuum_django.engine.context import BufferedSignal
from continuum_django.engine.events import Event
from continuum_django.engine.exceptions import ActivityFailed, ChildFailed
from continuum_django.engine.journal import Dispatch, Eager, RunClaim, RunStatus
from continuum_django.engine.local import LocalRunner
from continuum_django.engine.memory import MemoryJournal
from continuum_django.engine.replay import Activation

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ONCE = RetryPolicy(max_attempts=1)

# -- what programs call: outcomes are functions of their arguments ---------------------


@activity(name="props.double", retry=ONCE)
def double(value: int) -> int:
    return value * 2


@activity(name="props.label", retry=ONCE)
def label(value: int) -> str:
    return f"label-{value}"


@activity(name="props.explode", retry=ONCE)
def explode(value: int) -> None:
    raise ValueError(f"explode({value})")


@activity(name="props.undo", retry=ONCE)
def undo(value: int) -> str:
    return f"undone-{value}"


ACTIVITIES = {"double": double, "label": label}


@workflow(name="props.child")
def child(ctx: Any, value: int, fail: bool) -> int:
    doubled = ctx.activity(double, value)
    if fail:
        raise ValueError(f"child fails on {value}")
    return doubled


class ProgramFailed(Exception):
    """Raised by a program that ends by failing its run."""


# -- the interpreter: one step function per kind of step ------------------------------


def _activity(ctx: Any, index: int, name: str, value: int) -> Any:
    return ctx.activity(ACTIVITIES[name], value)


def _caught_failure(ctx: Any, index: int, value: int) -> Any:
    try:
        return ctx.activity(explode, value)
    except ActivityFailed as failure:
        return ["failed", str(failure)]


def _fan(ctx: Any, index: int, mode: str, members: list[list[Any]]) -> Any:
    handles = [ctx.start_activity(double if ok else explode, value) for ok, value in members]
    try:
        if mode == "all":
            return ctx.wait_all(*handles)
        return ctx.wait_any(*handles).result()
    except ActivityFailed as failure:
        return ["failed", str(failure)]


def _side_effect(ctx: Any, index: int, value: Any) -> Any:
    def draw() -> Any:
        return value

    return ctx.side_effect(draw)


def _sleep(ctx: Any, index: int, seconds: float) -> str:
    ctx.sleep(seconds)
    return "slept"


def _signal(ctx: Any, index: int, timeout: float | None, delivery: str) -> Any:
    return ctx.wait_signal(signal_name(index), timeout=timeout, default="timed out")


def _patched(ctx: Any, index: int) -> bool:
    return ctx.patched(f"p{index}")


def _child(ctx: Any, index: int, value: int, fail: bool) -> Any:
    try:
        return ctx.child(child, value, fail)
    except ChildFailed as failure:
        return ["child failed", str(failure)]


def _on_rollback(ctx: Any, index: int, value: int, ok: bool) -> None:
    ctx.on_rollback(undo if ok else explode, value)


def _compensate(ctx: Any, index: int, parallel: bool) -> int:
    return len(ctx.compensate(parallel=parallel))


def _attributes(ctx: Any, index: int, value: int) -> None:
    ctx.set_attributes(**{f"a{index}": value})


def _random(ctx: Any, index: int) -> float:
    return ctx.random()


def _uuid(ctx: Any, index: int) -> str:
    return str(ctx.uuid4())


def _now(ctx: Any, index: int) -> str:
    return ctx.now().isoformat()


STEPS: dict[str, Callable[..., Any]] = {
    "activity": _activity,
    "caught_failure": _caught_failure,
    "fan": _fan,
    "side_effect": _side_effect,
    "sleep": _sleep,
    "signal": _signal,
    "patched": _patched,
    "child": _child,
    "on_rollback": _on_rollback,
    "compensate": _compensate,
    "attributes": _attributes,
    "random": _random,
    "uuid": _uuid,
    "now": _now,
}


@workflow(name="props.interpreter")
def interpreter(ctx: Any, program: dict[str, Any]) -> list[Any]:
    results = []
    for index, (kind, *args) in enumerate(program["steps"]):
        results.append(STEPS[kind](ctx, index, *args))
    if program["fail"]:
        raise ProgramFailed(f"the program fails after {len(results)} steps")
    return results


def signal_name(index: int) -> str:
    return f"s{index}"


def signal_payload(index: int) -> str:
    return f"payload of s{index}"


# -- the strategy ----------------------------------------------------------------------

_values = st.integers(min_value=0, max_value=9)
_seconds = st.sampled_from([1.0, 60.0, 3600.0])
# A signal that never arrives needs a timeout, or the program would wait forever.
_signal_waits = st.one_of(
    st.tuples(st.just(None), st.sampled_from(["early", "late"])),
    st.tuples(_seconds, st.sampled_from(["early", "late", "never"])),
)

# Each kind of step is drawn as often as any other, then its arguments.
_ARGUMENTS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "activity": st.tuples(st.sampled_from(sorted(ACTIVITIES)), _values),
    "caught_failure": st.tuples(_values),
    "fan": st.tuples(
        st.sampled_from(["all", "any"]),
        st.lists(st.tuples(st.booleans(), _values).map(list), min_size=1, max_size=3),
    ),
    "side_effect": st.tuples(st.one_of(_values, st.text(max_size=3))),
    "sleep": st.tuples(_seconds),
    "signal": _signal_waits,
    "patched": st.tuples(),
    "child": st.tuples(_values, st.booleans()),
    "on_rollback": st.tuples(_values, st.booleans()),
    "compensate": st.tuples(st.booleans()),
    "attributes": st.tuples(_values),
    "random": st.tuples(),
    "uuid": st.tuples(),
    "now": st.tuples(),
}
assert set(_ARGUMENTS) == set(STEPS)

STEP = st.sampled_from(sorted(_ARGUMENTS)).flatmap(
    lambda kind: _ARGUMENTS[kind].map(lambda arguments: [kind, *arguments])
)

PROGRAMS = st.fixed_dictionaries(
    {"steps": st.lists(STEP, min_size=1, max_size=10), "fail": st.booleans()}
)


# -- the recorder ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Committed:
    """An activation the journal accepted, and the run as the activation saw it."""

    run_id: str
    history: tuple[Event, ...]
    mailbox: tuple[BufferedSignal, ...]
    now: dt.datetime
    activation: Activation


class RecordingJournal(MemoryJournal):
    """The in-memory journal, remembering every activation it committed."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.committed: list[Committed] = []

    def commit_activation(
        self, claim: RunClaim, activation: Activation, eager: Eager | None = None
    ) -> Dispatch:
        dispatch = super().commit_activation(claim, activation, eager)
        self.committed.append(
            Committed(
                run_id=claim.run_id,
                history=tuple(claim.history),
                mailbox=tuple(claim.mailbox),
                now=claim.now,
                activation=activation,
            )
        )
        return dispatch


@dataclass
class Recording:
    """A program run to its end: the root run's id and the journal that holds it all."""

    program: dict[str, Any]
    run_id: str
    journal: RecordingJournal
    runs: list[str] = field(default_factory=list)

    def history(self, run_id: str | None = None) -> list[Event]:
        return self.journal.history(run_id or self.run_id)

    def activations(self, run_id: str) -> list[Committed]:
        return [c for c in self.journal.committed if c.run_id == run_id]


def record(program: dict[str, Any]) -> Recording:
    """Run ``program`` to its end: early signals before the first activation, late ones
    once the run waits for them, timers fired one due time after another."""
    runner = LocalRunner(clock=FakeClock(START))
    journal = RecordingJournal(runner.clock)
    runner.journal = runner.runtime.journal = journal
    run_id = runner.start(interpreter, program)
    late = []
    for index, (kind, *args) in enumerate(program["steps"]):
        if kind == "signal" and args[1] != "never":
            if args[1] == "early":
                deliver(runner, run_id, index)
            else:
                late.append(index)
    for _ in range(1000):
        runner.run_until_idle(skip_time=False)
        if journal.runs[run_id].status in RunStatus.TERMINAL:
            return Recording(program, run_id, journal, runs=list(journal.runs))
        waiting = [c for c in journal.committed if c.run_id == run_id][-1].activation.waiting_for
        awaited = [i for i in late if waiting == f"signal {signal_name(i)!r}"]
        if awaited:
            late.remove(awaited[0])
            deliver(runner, run_id, awaited[0])
            continue
        due = [t.fire_at for t in journal.timers.values() if not (t.fired or t.cancelled)]
        if not due:
            raise AssertionError(f"program stuck waiting for {waiting}: {program}")
        runner.clock.set(max(min(due), runner.clock.now()))
    raise AssertionError(f"program did not end: {program}")


def deliver(runner: LocalRunner, run_id: str, index: int) -> None:
    name, payload = signal_name(index), signal_payload(index)
    runner.dispatcher.send(runner.journal.deliver_signal(run_id, name, payload, None))
