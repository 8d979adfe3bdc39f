"""What workflow code sees: the ``ctx`` that turns effects into journaled commands.

Each effectful call gets a command id ``"{position}:{kind}:{name}"``. On replay the
recorded command at the same position must carry the same id, or the run has
drifted; a command whose outcome is not yet in the history suspends the
workflow by raising `Suspend`, a BaseException that ``except Exception`` in
workflow code cannot swallow.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import operator
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, NoReturn, TypeVar

from . import codec
from .definitions import (
    ActivityDefinition,
    Duration,
    StartOptions,
    WorkflowDefinition,
    bind_arguments,
    check_timeout,
    registry,
    to_seconds,
)
from .events import COMMAND_EVENTS, Event, EventType, NewEvent
from .exceptions import (
    ActivityFailed,
    CancellationRequested,
    ChildCancelled,
    ChildFailed,
    ContinueAsNew,
    ContinuumError,
    PayloadError,
    ReplayDriftError,
    SignalTimeout,
    WorkflowUsageError,
)
from .retry import RetryPolicy
from .updates import UpdateRequest, signal_name

T = TypeVar("T")
MISSING: Any = object()


class Suspend(BaseException):
    """Unwinds workflow code when it reaches an effect whose outcome is not journaled yet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferedSignal:
    """A signal waiting in the run's mailbox."""

    id: int
    name: str
    payload: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """What the engine needs from its host: it reads no settings of its own."""

    default_retry: RetryPolicy = field(default_factory=RetryPolicy)
    default_queue: str = "continuum"
    max_payload_bytes: int | None = 1024 * 1024
    max_payload_depth: int = codec.DEFAULT_MAX_DEPTH
    # Replay checks stop where the history ends instead of running side effects for real.
    replay_only: bool = False


class Handle:
    """A command started without waiting; `result()` waits for its outcome."""

    __slots__ = ("_ctx", "command_id", "name")

    def __init__(self, ctx: WorkflowContext, command_id: str, name: str) -> None:
        self._ctx = ctx
        self.command_id = command_id
        self.name = name

    def result(self) -> Any:
        return self._ctx._value(self, self._ctx._wait_for(self))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.command_id}>"


class ActivityHandle(Handle):
    """A scheduled activity (or compensation)."""


class TimerHandle(Handle):
    """A durable timer started without waiting (`WorkflowContext.timer`); it is done once
    the timer fired, and its result is None."""


class SignalHandle(Handle):
    """The next signal of a name (`WorkflowContext.signal_waiter`); it is done once such a
    signal is in the mailbox, which it then takes, and its result is the signal's payload.
    Only a wait on the handle takes a signal: one that loses a `wait_any` race stays in
    the mailbox for the next wait."""


class ChildHandle(Handle):
    """A started child workflow; ``run_id`` is derived from the parent's id and the command."""

    __slots__ = ("run_id",)

    def __init__(self, ctx: WorkflowContext, command_id: str, name: str, run_id: str) -> None:
        super().__init__(ctx, command_id, name)
        self.run_id = run_id


@dataclass(slots=True)
class _Compensation:
    definition: ActivityDefinition[..., Any]
    args: list[Any]
    kwargs: dict[str, Any]
    done: bool = False


MAX_CHILD_DEPTH = 8

# Longest key `WorkflowContext.publish` takes (it is part of a command id).
MAX_STATE_KEY_CHARS = 200


def check_state_key(key: Any) -> str:
    """``key`` if it can name a published value; else a `WorkflowUsageError` saying why."""
    if not isinstance(key, str):
        raise WorkflowUsageError(f"publish needs a str key, not {type(key).__name__}")
    if not key:
        raise WorkflowUsageError("publish needs a non-empty key")
    if len(key) > MAX_STATE_KEY_CHARS:
        raise WorkflowUsageError(
            f"publish key is {len(key)} characters long, over the limit of {MAX_STATE_KEY_CHARS}"
        )
    problem = codec.string_problem(key)
    if problem:
        raise WorkflowUsageError(f"publish key {problem}")
    return key


_OUTCOMES = {
    EventType.ACTIVITY_COMPLETED,
    EventType.ACTIVITY_FAILED,
    EventType.COMPENSATION_COMPLETED,
    EventType.COMPENSATION_FAILED,
    EventType.CHILD_COMPLETED,
    EventType.CHILD_FAILED,
    EventType.CHILD_CANCELLED,
    EventType.TIMER_FIRED,
    EventType.SIGNAL_RECEIVED,
}


class _ReplayAwareLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that stays silent while the workflow replays history it has already logged."""

    def __init__(self, logger: logging.Logger, ctx: WorkflowContext) -> None:
        super().__init__(logger, {"run_id": ctx.run_id})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)


class HistoryIndex:
    """What replay looks up in a history: the event recorded at each command position, the
    first outcome of each command, the first cancel request, and whether the run ended.

    Read-only once built. `extended` builds the index of a longer history of the same
    run from this one, copying its tables (fast, in C) instead of walking every event
    again in Python, which is most of a long run's replay.
    """

    __slots__ = (
        "cancel", "ended", "events", "last_position", "outcomes", "recorded", "timed_out",
    )  # fmt: skip

    def __init__(self) -> None:
        self.recorded: dict[int, Event] = {}
        self.outcomes: dict[str, Event] = {}
        self.cancel: Event | None = None
        self.timed_out: Event | None = None  # the run's deadline passed (`run_timed_out`)
        self.ended = False
        self.events: tuple[Event, ...] = ()
        self.last_position = -1  # the highest position in `recorded`

    @classmethod
    def of(cls, history: Sequence[Event]) -> HistoryIndex:
        return cls()._add(history, 0)

    def extends_to(self, history: Sequence[Event]) -> bool:
        """Whether ``history`` begins with the very events this index was built from (the
        same objects, compared by identity: a pass in C, not a walk in Python)."""
        return 0 < len(self.events) <= len(history) and all(map(operator.is_, self.events, history))

    def extended(self, history: Sequence[Event]) -> HistoryIndex:
        """The index of ``history``, which must continue this one (see `extends_to`)."""
        if len(history) == len(self.events):
            return self
        longer = HistoryIndex()
        longer.recorded = dict(self.recorded)
        longer.outcomes = dict(self.outcomes)
        longer.cancel, longer.ended = self.cancel, self.ended
        longer.timed_out = self.timed_out
        longer.last_position = self.last_position
        return longer._add(history, len(self.events))

    def _add(self, history: Sequence[Event], start: int) -> HistoryIndex:
        recorded, outcomes = self.recorded, self.outcomes
        for event in history[start:] if start else history:
            kind = event.type
            if event.command_id:
                if kind in _RECORDED:
                    position = int(event.command_id.split(":", 1)[0])
                    recorded.setdefault(position, event)
                    self.last_position = max(self.last_position, position)
                if kind in _OUTCOMES:
                    outcomes.setdefault(event.command_id, event)
            elif kind == EventType.CANCEL_REQUESTED and self.cancel is None:
                self.cancel = event
            elif kind == EventType.RUN_TIMED_OUT:
                self.timed_out = event
            if kind in RUN_ENDS:
                self.ended = True
            elif kind == EventType.ACTIVITY_RETRY_SCHEDULED:
                outcomes.pop(event.command_id, None)  # replay waits for the retry's outcome
                self.ended = False
        self.events = tuple(history)
        return self


class WorkflowContext:
    """The ``ctx`` passed as first argument to every workflow function."""

    def __init__(
        self,
        *,
        run_id: str,
        workflow_name: str,
        history: Sequence[Event],
        mailbox: Iterable[BufferedSignal] = (),
        now: dt.datetime,
        config: EngineConfig | None = None,
        index: HistoryIndex | None = None,
    ) -> None:
        self.run_id = run_id
        self.workflow_name = workflow_name
        self._config = config or EngineConfig()
        self._now = now
        self.read_clock = False  # whether the code read `now` live (ctx.now(), a timer)
        started = history[0].payload if history else {}
        index = index if index is not None else HistoryIndex.of(history)
        self._recorded = index.recorded
        self._last_position = index.last_position
        self._ended = index.ended
        self._outcomes = index.outcomes
        self._cancel: Event | None = index.cancel
        self._mailbox = list(mailbox)
        self._position = 0
        self._matched = 0
        self._new: list[NewEvent] = []
        self._seed = started.get("seed", 0)
        self._random: Random | None = None  # seeded on first use: most never draw
        self._attributes: dict[str, Any] = dict(started.get("attributes") or {})
        self._attributes_changed = False
        # Published state, in the codec's form: carried over from a predecessor (see
        # `NewRun.state`), then each `publish` in order, replayed ones included.
        self._state: dict[str, Any] = dict(started.get("state") or {})
        self._state_changed = False
        self._cancel_delivered = False
        self._compensations: list[_Compensation] = []
        self._patches: dict[str, bool] = {}  # each patch id's first answer in this run
        self._taken: dict[str, Event] = {}  # signals signal waiters took in this activation
        self._answered: set[str] = set()  # update requests replied to or rejected so far
        self._depth = int(started.get("depth", 0))
        self._namespace = started.get("namespace", "default")
        self.suspended_at: str | None = None
        self.drift: ReplayDriftError | None = None
        self.logger: logging.LoggerAdapter[logging.Logger] = _ReplayAwareLogger(
            logging.getLogger(f"continuum.workflow.{workflow_name}"), self
        )

    # -- facts ---------------------------------------------------------------

    @property
    def is_replaying(self) -> bool:
        """True while the code re-executes commands the history already holds."""
        return self._matched < len(self._recorded)

    @property
    def cancel_delivered(self) -> bool:
        return self._cancel_delivered

    @property
    def unmatched_commands(self) -> list[Event]:
        if self._last_position < self._position:
            return []  # the usual case: without sorting a long history's commands
        return [e for p, e in sorted(self._recorded.items()) if p >= self._position]

    @property
    def new_events(self) -> list[NewEvent]:
        return self._new

    @property
    def attributes(self) -> dict[str, Any] | None:
        """The run's attributes when the code changed them, else None."""
        return self._attributes if self._attributes_changed else None

    @property
    def published_state(self) -> dict[str, Any] | None:
        """The run's published state when this activation published something, else None."""
        return self._state if self._state_changed else None

    # -- activities ----------------------------------------------------------

    def activity(self, act: ActivityDefinition[..., T] | str, *args: Any, **kwargs: Any) -> T:
        """Run an activity and return its result; raises `ActivityFailed` once retries are spent."""
        definition = self._activity_definition(act)
        # Replay runs this for every past step, so a command the history holds, that
        # succeeded, with no cancel to deliver, takes the short way: what `_command`,
        # `_wait` and `_value` would do, without their calls. Anything else goes the long
        # way (start_activity(...).result()), nothing changed yet.
        position = self._position
        recorded = self._recorded.get(position)
        if recorded is not None and self._cancel is None and self.suspended_at is None:
            command_id = f"{position}:activity:{definition.name}"
            outcome = self._outcomes.get(command_id)
            if (
                outcome is not None
                and outcome.type in _SUCCESSES
                and recorded.command_id == command_id
                and recorded.type == EventType.ACTIVITY_SCHEDULED
            ):
                self._matched += 1
                self._position = position + 1
                return codec.decode(outcome.payload["result"])  # type: ignore[no-any-return,unused-ignore]
        handle = self._schedule(definition, args, kwargs, compensation=False)
        return self._value(handle, self._wait(handle.command_id))  # type: ignore[no-any-return,unused-ignore]

    def start_activity(
        self, act: ActivityDefinition[..., Any] | str, *args: Any, **kwargs: Any
    ) -> ActivityHandle:
        """Schedule an activity without waiting for it; returns a handle."""
        return self._schedule(self._activity_definition(act), args, kwargs, compensation=False)

    def _schedule(
        self,
        definition: ActivityDefinition[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        compensation: bool,
    ) -> ActivityHandle:
        kind = "compensation" if compensation else "activity"
        command_id, recorded = self._command(kind, definition.name)
        if recorded is None:
            call = self._encode_call(args, kwargs, f"arguments of {kind} {definition.name!r}")
            payload = {
                "activity": definition.name,
                **call,
                "queue": definition.queue or self._config.default_queue,
                "retry": (definition.retry or self._config.default_retry).to_json(),
                "timeout": definition.timeout,
                "schedule_to_close_timeout": definition.schedule_to_close_timeout,
                "heartbeat_timeout": definition.heartbeat_timeout,
            }
            if definition.transactional:  # only then: older histories keep their payloads
                payload["transactional"] = True
            if definition.flow:  # absent otherwise: histories without limits stay as they were
                payload["flow"] = definition.flow.payload(
                    definition.fn, definition.name, args, kwargs
                )
            scheduled = (
                EventType.COMPENSATION_SCHEDULED if compensation else EventType.ACTIVITY_SCHEDULED
            )
            self._emit(scheduled, command_id, payload)
        return ActivityHandle(self, command_id, definition.name)

    def wait_all(self, *handles: Handle) -> list[Any]:
        """Wait for every handle; results in argument order, or the earliest failure raised."""
        outcomes = [self._wait_for(handle) for handle in handles]
        for handle, outcome in zip(handles, outcomes, strict=True):
            if outcome.type in _FAILURES:
                self._value(handle, outcome)
        return [self._value(h, o) for h, o in zip(handles, outcomes, strict=True)]

    def wait_any(self, *handles: Handle) -> Handle:
        """Wait until one handle finishes; returns the first to finish in journal order."""
        if not handles:
            raise WorkflowUsageError("wait_any needs at least one handle")
        self._alive()
        done = [(o.seq, h) for h in handles if (o := self._outcome_of(h)) is not None]
        first_seq = min(done, key=lambda pair: pair[0])[0] if done else None
        self._deliver_cancel(first_seq)
        if not done:
            # Nothing journaled has finished: a buffered signal may (the first waiter in
            # argument order takes one), else the run waits for whatever comes first.
            for handle in handles:
                if isinstance(handle, SignalHandle) and self._take_for(handle) is not None:
                    return handle
            self._suspend(f"any of {', '.join(h.command_id for h in handles)}")
        return min(done, key=lambda pair: pair[0])[1]

    def timer(self, duration: Duration) -> TimerHandle:
        """Start a durable timer without waiting for it: a handle for `wait_any` /
        `wait_all` (``ctx.wait_any(approval, ctx.timer(86400))``) or ``.result()``."""
        seconds = to_seconds(duration, what="timer duration")
        command_id, recorded = self._command("timer", "timer")
        if recorded is None:
            self._emit(EventType.TIMER_SCHEDULED, command_id, self._timer_payload(seconds))
        return TimerHandle(self, command_id, "timer")

    def signal_waiter(self, name: str) -> SignalHandle:
        """A handle for the next signal called ``name``, to race in `wait_any` / `wait_all`
        with activities, children and timers; ``.result()`` is its payload."""
        if not isinstance(name, str) or not name:
            raise WorkflowUsageError(f"signal_waiter needs a signal name, not {name!r}")
        command_id, _ = self._command("signal", name)
        return SignalHandle(self, command_id, name)

    def _outcome_of(self, handle: Handle) -> Event | None:
        """The handle's outcome in the history, or taken from the mailbox in this activation."""
        return self._outcomes.get(handle.command_id) or self._taken.get(handle.command_id)

    def _take_for(self, handle: SignalHandle) -> Event | None:
        """Take the next buffered signal of the handle's name, journaling its receipt."""
        taken = self._take_signal(handle.command_id, handle.name)
        if taken is not None:
            self._taken[handle.command_id] = taken
        return taken

    def _wait_for(self, handle: Handle) -> Event:
        """`_wait` for any handle: a signal waiter takes a buffered signal when it has none."""
        if not isinstance(handle, SignalHandle):
            return self._wait(handle.command_id)
        self._alive()
        outcome = self._outcome_of(handle)
        self._deliver_cancel(outcome.seq if outcome else None)
        if outcome is None:
            outcome = self._take_for(handle)
        if outcome is None:
            self._suspend(f"signal {handle.name!r}")
        return outcome

    # -- sagas ---------------------------------------------------------------

    def on_rollback(
        self, act: ActivityDefinition[..., Any] | str, *args: Any, **kwargs: Any
    ) -> None:
        """Register a compensation that `compensate()` will run (last registered, first run)."""
        self._alive()
        definition = self._activity_definition(act)
        self._encode_call(args, kwargs, f"arguments of compensation {definition.name!r}")
        self._compensations.append(_Compensation(definition, list(args), dict(kwargs)))

    def compensate(self, parallel: bool = False) -> list[ActivityFailed]:
        """Run every registered compensation not yet run, LIFO (or all at once).

        Returns the failures of compensations whose retries were exhausted; an empty list
        means every compensation succeeded. A failure does not stop the others.
        """
        self._alive()
        pending = [c for c in reversed(self._compensations) if not c.done]
        for compensation in pending:
            compensation.done = True
        failures: list[ActivityFailed] = []
        handles: list[ActivityHandle] = []
        for compensation in pending:
            handle = self._schedule(
                compensation.definition, compensation.args, compensation.kwargs, compensation=True
            )
            if parallel:
                handles.append(handle)
            else:
                failures += self._failures([handle])
        return failures + self._failures(handles)

    def _failures(self, handles: list[ActivityHandle]) -> list[ActivityFailed]:
        failures = []
        for handle in handles:
            try:
                handle.result()
            except ActivityFailed as failure:
                failures.append(failure)
        return failures

    # -- child workflows -----------------------------------------------------

    def child(
        self, wf: WorkflowDefinition[..., T] | StartOptions[..., T] | str, *args: Any, **kwargs: Any
    ) -> T:
        """Run a child workflow and return its result; raises `ChildFailed` if it fails."""
        return self.start_child(wf, *args, **kwargs).result()  # type: ignore[no-any-return,unused-ignore]

    def start_child(
        self,
        wf: WorkflowDefinition[..., Any] | StartOptions[..., Any] | str,
        *args: Any,
        **kwargs: Any,
    ) -> ChildHandle:
        """Start a child workflow without waiting for it; returns a handle.

        ``wf.options(timeout=...)`` gives the child a deadline of its own (the only start
        option a child takes: it shares its parent's namespace and has no key).
        """
        timeout = None
        if isinstance(wf, StartOptions):
            timeout = self._child_timeout(wf)
            wf = wf.workflow
        definition = registry.workflow(wf) if isinstance(wf, str) else wf
        if not isinstance(definition, WorkflowDefinition):
            raise WorkflowUsageError(f"{wf!r} is not a workflow: decorate it with @workflow")
        command_id, recorded = self._command("child", definition.name)
        if recorded is not None:
            return ChildHandle(self, command_id, definition.name, recorded.payload["run_id"])
        try:
            bind_arguments(definition, args, kwargs)
        except TypeError as exc:
            raise WorkflowUsageError(f"child {exc}") from None
        if self._depth + 1 > MAX_CHILD_DEPTH:
            raise WorkflowUsageError(
                f"child workflow {definition.name!r} would nest {self._depth + 1} levels deep; "
                f"the limit is {MAX_CHILD_DEPTH}: flatten the tree or use continue_as_new"
            )
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"continuum:{self.run_id}/{command_id}"))
        what = f"input of child workflow {definition.name!r}"
        payload = {
            "workflow": definition.name,
            "version": definition.version,
            "version_hash": definition.version_hash,
            "run_id": run_id,
            "input": self._encode_call(args, kwargs, what),
            "namespace": self._namespace,
            "depth": self._depth + 1,
            "seed": uuid.UUID(run_id).int >> 66,
        }
        if timeout is not None:
            payload["timeout"] = timeout
        flow = definition.flow.start_payload(definition.fn, definition.name, args, kwargs)
        if flow is not None:  # admitted like a start (see `continuum_django.journal.starts_flow`)
            payload["flow"] = flow
        self._emit(EventType.CHILD_STARTED, command_id, payload)
        return ChildHandle(self, command_id, definition.name, run_id)

    @staticmethod
    def _child_timeout(options: StartOptions[..., Any]) -> float | None:
        other = sorted(set(options.options) - {"timeout"})
        if other:
            raise WorkflowUsageError(
                f"child workflow {options.workflow.name!r} was given start options {other}; "
                "a child takes only timeout= (it runs in its parent's namespace)"
            )
        return check_timeout(options.options.get("timeout"))

    # -- long-running workflows and code changes -----------------------------

    def continue_as_new(self, *args: Any, **kwargs: Any) -> NoReturn:
        """End this run as `continued` and start its successor with these arguments."""
        self._alive()
        self._deliver_cancel(None)  # a run asked to stop does not start its successor
        what = f"input of the successor of {self.workflow_name!r}"
        raise ContinueAsNew(self._encode_call(args, kwargs, what))

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the code path added by the patch ``patch_id``.

        New runs journal a marker and take it; runs whose history predates the patch
        (they recorded another command here) take the old path, without drift. The first
        answer holds for the rest of the run (a loop asks again past its recorded history):
        only the first ask of a patch id journals its marker.
        """
        self._alive()
        command_id = f"{self._position}:patch:{patch_id}"
        recorded = self._recorded.get(self._position)
        if recorded is not None and recorded.command_id == command_id:
            self._check_type(recorded, "patch")
            self._advance_position()  # the history took the new path here: it is the truth
            self._patches.setdefault(patch_id, True)
            return True
        decided = self._patches.get(patch_id)
        if decided is not None:
            return decided
        decided = recorded is None
        if decided:
            self._advance_position()
            self._emit(EventType.PATCH_MARKER, command_id, {"patch": patch_id})
        self._patches[patch_id] = decided
        return decided

    # -- timers and signals --------------------------------------------------

    def sleep(self, duration: Duration) -> None:
        """A durable timer: the run sleeps for ``duration`` (seconds or a timedelta)."""
        seconds = to_seconds(duration, what="sleep duration")
        command_id, recorded = self._command("timer", "sleep")
        if recorded is None:
            self._emit(EventType.TIMER_SCHEDULED, command_id, self._timer_payload(seconds))
        self._wait(command_id)

    def sleep_until(self, moment: dt.datetime) -> None:
        """A durable timer to a point in time (timezone-aware); a moment already past
        fires at once. The moment is journaled, so replay waits for the same one."""
        if not isinstance(moment, dt.datetime) or moment.utcoffset() is None:
            raise WorkflowUsageError(
                f"sleep_until needs a timezone-aware datetime, not {moment!r} "
                "(use django.utils.timezone.now() + timedelta(...) or datetime(..., tzinfo=UTC))"
            )
        command_id, recorded = self._command("timer", "sleep")
        if recorded is None:
            payload = {"fire_at": moment.astimezone(dt.UTC).isoformat(), "seconds": None}
            self._emit(EventType.TIMER_SCHEDULED, command_id, payload)
        self._wait(command_id)

    def wait_signal(
        self, name: str, timeout: Duration | None = None, default: Any = MISSING
    ) -> Any:
        """The next buffered signal called ``name``.

        On timeout, returns ``default``, or raises `SignalTimeout` when none was given.
        """
        seconds = to_seconds(timeout, what="signal timeout")
        self._alive()
        taken = self._recorded.get(self._position)
        if taken is not None and taken.command_id != f"{self._position}:signal:{name}":
            # A wait without a timeout journals nothing while it waits; if later commands
            # hold its place, the run was cancelled here: deliver that again, or it is drift.
            self._deliver_cancel(None)
        command_id, recorded = self._peek("signal", name)
        if recorded is not None:
            self._advance_position()
            outcome = self._outcome(command_id)
            self._deliver_cancel(outcome.seq if outcome else None)
            if outcome is None:
                outcome = self._take_signal(command_id, name)
        else:
            self._deliver_cancel(None)
            outcome = self._take_signal(command_id, name, new=True)
            if outcome is None and seconds is not None:
                self._advance_position()
                payload = self._timer_payload(seconds) | {"signal": name}
                self._emit(EventType.TIMER_SCHEDULED, command_id, payload)
        if outcome is None:
            return self._suspend(f"signal {name!r}")
        if outcome.type == EventType.SIGNAL_RECEIVED:
            return codec.decode(outcome.payload["payload"])
        if default is MISSING:
            raise SignalTimeout(f"no signal {name!r} arrived within {seconds} seconds", signal=name)
        return default

    def wait_update(self, name: str, timeout: Duration | None = None) -> UpdateRequest | None:
        """The next update request called ``name`` (sent with `continuum_django.update`),
        waiting for one like `wait_signal`; None when ``timeout`` passes first. Answer it
        with ``request.reply(value)`` or ``request.reject(reason)``."""
        if not isinstance(name, str) or not name:
            raise WorkflowUsageError(f"wait_update needs an update name, not {name!r}")
        message = self.wait_signal(signal_name(name), timeout=timeout, default=None)
        if message is None:
            return None
        return UpdateRequest(
            self, id=message["request_id"], name=name, payload=message.get("payload")
        )

    def _answer_update(self, request: UpdateRequest, type_: EventType, value: Any) -> None:
        """Journal the one answer (``update_replied`` / ``update_rejected``) to ``request``."""
        self._alive()
        if request.id in self._answered:
            raise WorkflowUsageError(
                f"update request {request.id} ({request.name!r}) was already answered: "
                "reply() or reject() once per request"
            )
        command_id, recorded = self._command("reply", request.name)
        if recorded is not None and recorded.type != type_:
            self._drift(
                self._position - 1,
                f"the code now answers {command_id!r} with {type_}, but the history recorded "
                f"{recorded.type} (seq {recorded.seq})",
                expected=recorded.command_id,
                actual=command_id,
            )
        if recorded is None:
            if type_ == EventType.UPDATE_REPLIED:
                body = {"result": self._encode(value, f"reply to update {request.name!r}")}
            else:
                body = {"reason": value}
            payload = {"request_id": request.id, "name": request.name, **body}
            self._emit(type_, command_id, payload)
        self._answered.add(request.id)

    # -- determinism helpers -------------------------------------------------

    def side_effect(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` once and journal its value; replay returns the journaled value."""
        return self._journal_value("side_effect", getattr(fn, "__name__", "fn"), fn)

    def now(self) -> dt.datetime:
        """The current time, journaled so that replay sees the same value."""
        return self._journal_value("now", "now", self._clock)

    def _journal_value(self, kind: str, name: str, fn: Callable[[], T]) -> T:
        command_id, recorded = self._command(kind, name)
        if recorded is not None:
            return codec.decode(recorded.payload["value"])  # type: ignore[no-any-return,unused-ignore]
        if self._config.replay_only:
            self._suspend(f"{command_id} (past the end of the history)")
        value = self._encode(fn(), f"{kind} value")
        self._emit(EventType.SIDE_EFFECT, command_id, {"value": value})
        return codec.decode(value)  # type: ignore[no-any-return,unused-ignore]

    def uuid4(self) -> uuid.UUID:
        """A random UUID drawn from the run's seeded generator."""
        self._alive()
        return uuid.UUID(int=self._rng().getrandbits(128), version=4)

    def random(self) -> float:
        """A float in [0, 1) from the run's seeded generator."""
        self._alive()
        return self._rng().random()

    def _rng(self) -> Random:
        if self._random is None:
            self._random = Random(self._seed)
        return self._random

    def set_attributes(self, **attributes: Any) -> None:
        """Set search attributes on the run (queryable, shown in the admin)."""
        self._alive()
        self._attributes.update(self._encode(attributes, "attributes"))
        self._attributes_changed = True

    def publish(self, key: str, value: Any) -> None:
        """Expose ``value`` under ``key`` to the world: ``continuum_django.state(run_id)``
        reads the last value of each key without replaying the run.

        Journaled once as a ``state_published`` command; replay returns at once and writes
        nothing again. ``value`` goes through the codec, under the payload limits, and the
        whole state must stay within ``MAX_PAYLOAD_BYTES`` too.
        """
        check_state_key(key)
        command_id, recorded = self._command("publish", key)
        if recorded is not None:
            self._state[key] = recorded.payload["value"]
            return
        encoded = self._encode(value, f"value published as {key!r}")
        state = {**self._state, key: encoded}
        limit = self._config.max_payload_bytes
        if limit is not None:
            size = len(json.dumps(state, separators=(",", ":")).encode())
            if size > limit:
                raise PayloadError(
                    f"publishing {key!r} would make the run's published state {size} bytes "
                    f"once encoded, over the limit of {limit} bytes "
                    "(CONTINUUM['MAX_PAYLOAD_BYTES']); publish less, or a reference",
                    size=size,
                    limit=limit,
                )
        self._emit(EventType.STATE_PUBLISHED, command_id, {"key": key, "value": encoded})
        self._state = state
        self._state_changed = True

    # -- internals -----------------------------------------------------------

    def _encode(self, value: Any, what: str) -> Any:
        """``value`` through the codec gate, under the run's size and depth limits."""
        config = self._config
        return codec.encode(
            value, what=what, max_bytes=config.max_payload_bytes, max_depth=config.max_payload_depth
        )

    def _encode_call(
        self, args: Sequence[Any], kwargs: dict[str, Any], what: str
    ) -> dict[str, Any]:
        """A call's args and kwargs through the codec gate, bounded together as one input."""
        config = self._config
        encoded = codec.encode_many(
            {"args": list(args), "kwargs": dict(kwargs)},
            what=what,
            max_bytes=config.max_payload_bytes,
            max_depth=config.max_payload_depth,
        )
        return {"args": encoded["args"], "kwargs": encoded["kwargs"]}

    def _activity_definition(self, act: Any) -> ActivityDefinition[..., Any]:
        if isinstance(act, ActivityDefinition):
            return act
        if isinstance(act, str):
            return registry.activity(act)
        raise WorkflowUsageError(
            f"{act!r} is not an activity: decorate it with @activity, or pass a registered name"
        )

    def _clock(self) -> dt.datetime:
        self.read_clock = True
        return self._now

    def _timer_payload(self, seconds: float | None) -> dict[str, Any]:
        fire_at = self._clock() + dt.timedelta(seconds=seconds or 0.0)
        return {"fire_at": fire_at.isoformat(), "seconds": seconds}

    def _alive(self) -> None:
        if self.suspended_at is not None:
            raise WorkflowUsageError(
                "workflow code kept running after the engine suspended it at "
                f"{self.suspended_at}: a bare `except:` or `except BaseException:` swallowed the "
                "suspension; catch Exception (or the specific error) instead"
            )

    def _peek(self, kind: str, name: str) -> tuple[str, Event | None]:
        command_id = f"{self._position}:{kind}:{name}"
        recorded = self._recorded.get(self._position)
        if recorded is not None and recorded.command_id != command_id:
            self._drift(
                self._position,
                f"the code now issues {command_id!r}, but the history recorded "
                f"{recorded.command_id!r} ({recorded.type} at seq {recorded.seq})",
                expected=recorded.command_id,
                actual=command_id,
            )
        if recorded is not None:
            self._check_type(recorded, kind)
        return command_id, recorded

    def _advance_position(self) -> None:
        if self._position in self._recorded:
            self._matched += 1
        self._position += 1

    def _command(self, kind: str, name: str) -> tuple[str, Event | None]:
        if self.suspended_at is not None:
            self._alive()
        if self._cancel is not None and not self._cancel_delivered:
            self._cancel_before(f"{self._position}:{kind}:{name}")
        command_id, recorded = self._peek(kind, name)
        if recorded is not None:
            self._matched += 1
        self._position += 1
        return command_id, recorded

    def _emit(self, type_: EventType, command_id: str, payload: Any) -> None:
        if type_ in COMMAND_EVENTS:
            self._check_new(type_, command_id)
        self._new.append(NewEvent(type=type_, command_id=command_id, payload=payload))

    def _check_new(self, type_: EventType, command_id: str) -> None:
        """A new command must be new: a history that already holds its outcome, a command
        at a later position, or its end has lost an event (positions are contiguous, but
        for signal waits, which journal only what they take)."""
        position = int(command_id.split(":", 1)[0])
        if command_id in self._outcomes:
            lost = f"holds an outcome of {command_id!r} but not the command itself"
        elif position < self._last_position:
            later = self._recorded[self._last_position]
            lost = f"holds {later.command_id!r} (seq {later.seq}) but nothing at #{position}"
        elif self._ended:
            lost = "ended the run before it"
        else:
            return
        self._drift(
            position,
            f"the code issues {command_id!r} ({type_}) as new, but the history {lost}: an "
            "event is missing from it",
            expected=None,
            actual=command_id,
        )

    def _check_type(self, recorded: Event, kind: str) -> None:
        """The recorded event at a matching command id must be of the command's kind."""
        if recorded.type not in _KIND_TYPES.get(kind, (recorded.type,)):
            self._drift(
                self._position,
                f"the history recorded {recorded.command_id!r} as {recorded.type} (seq "
                f"{recorded.seq}), which is not how a {kind} command is journaled",
                expected=recorded.command_id,
                actual=recorded.command_id,
            )

    def _drift(self, position: int, what: str, *, expected: str | None, actual: str) -> NoReturn:
        """Raise (and keep, should the code swallow it) the drift found at ``position``."""
        self.drift = ReplayDriftError(
            f"replay drift at command #{position}: {what}",
            position=position,
            expected=expected,
            actual=actual,
        )
        raise self.drift

    def _outcome(self, command_id: str) -> Event | None:
        """The first outcome journaled for the command (journal order decides races)."""
        return self._outcomes.get(command_id)

    def _deliver_cancel(self, outcome_seq: int | None) -> None:
        """Raise the pending cancellation at this suspension point, once."""
        cancel = self._cancel
        if cancel is None or self._cancel_delivered:
            return
        if outcome_seq is None or outcome_seq > cancel.seq:
            self._cancel_delivered = True
            raise CancellationRequested((cancel.payload or {}).get("reason", ""))

    def _cancel_before(self, command_id: str) -> None:
        """A pending cancel is delivered before any new command is journaled: nothing is
        scheduled after ``cancel_requested`` but the cleanup the code runs in response.

        On replay the same point is found again: the code issues a command the history
        does not hold yet, or one whose place the cleanup took (recorded after the cancel).
        """
        recorded = self._recorded.get(self._position)
        assert self._cancel is not None
        if recorded is None or (
            recorded.command_id != command_id and recorded.seq > self._cancel.seq
        ):
            self._deliver_cancel(None)

    def _wait(self, command_id: str) -> Event:
        if self.suspended_at is not None:
            self._alive()
        outcome = self._outcomes.get(command_id)
        if self._cancel is not None:
            self._deliver_cancel(outcome.seq if outcome else None)
        if outcome is None:
            self._suspend(command_id)
        return outcome

    def _suspend(self, what: str) -> NoReturn:
        self.suspended_at = what
        raise Suspend(what)

    def _take_signal(self, command_id: str, name: str, new: bool = False) -> Event | None:
        for index, signal in enumerate(self._mailbox):
            if signal.name == name:
                del self._mailbox[index]
                if new:
                    self._advance_position()
                payload = {"name": name, "payload": signal.payload, "signal_id": signal.id}
                self._emit(EventType.SIGNAL_RECEIVED, command_id, payload)
                return Event(seq=-1, type=EventType.SIGNAL_RECEIVED, payload=payload)
        return None

    def _value(self, handle: Handle, outcome: Event) -> Any:
        payload = outcome.payload or {}
        if outcome.type in _SUCCESSES:
            return codec.decode(payload["result"])
        if outcome.type == EventType.TIMER_FIRED:
            return None
        if outcome.type == EventType.SIGNAL_RECEIVED:
            return codec.decode(payload["payload"])
        if outcome.type in (EventType.CHILD_FAILED, EventType.CHILD_CANCELLED):
            error = payload.get("error") or {}
            kind: type[ChildFailed]
            if outcome.type == EventType.CHILD_CANCELLED:
                kind, what = ChildCancelled, "was cancelled"
            else:
                kind, what = ChildFailed, f"failed: {error.get('type')}: {error.get('message')}"
            raise kind(
                f"child workflow {handle.name!r} ({payload.get('run_id')}) {what}",
                workflow=handle.name,
                run_id=payload.get("run_id"),
                error=error,
            )
        error = payload["error"]
        attempts = payload.get("attempts", 1)
        raise ActivityFailed(
            f"activity {handle.name!r} failed after {attempts} attempt(s): "
            f"{error['type']}: {error['message']}",
            activity=handle.name,
            error_type=error["type"],
            error_message=error["message"],
            attempts=attempts,
        )


# Events that hold a command's place in the sequence (checked for drift on replay).
_RECORDED = COMMAND_EVENTS | {EventType.SIGNAL_RECEIVED}

# How each kind of command is journaled where it holds its place.
_KIND_TYPES = {
    "activity": (EventType.ACTIVITY_SCHEDULED,),
    "compensation": (EventType.COMPENSATION_SCHEDULED,),
    "timer": (EventType.TIMER_SCHEDULED,),
    "child": (EventType.CHILD_STARTED,),
    "patch": (EventType.PATCH_MARKER,),
    "publish": (EventType.STATE_PUBLISHED,),
    "side_effect": (EventType.SIDE_EFFECT,),
    "now": (EventType.SIDE_EFFECT,),
    "signal": (EventType.SIGNAL_RECEIVED, EventType.TIMER_SCHEDULED),
    "reply": (EventType.UPDATE_REPLIED, EventType.UPDATE_REJECTED),
}

RUN_ENDS = {
    EventType.RUN_COMPLETED,
    EventType.RUN_FAILED,
    EventType.RUN_CANCELLED,
    EventType.RUN_CONTINUED,
}

_SUCCESSES = {
    EventType.ACTIVITY_COMPLETED,
    EventType.COMPENSATION_COMPLETED,
    EventType.CHILD_COMPLETED,
}
_FAILURES = {
    EventType.ACTIVITY_FAILED,
    EventType.COMPENSATION_FAILED,
    EventType.CHILD_FAILED,
    EventType.CHILD_CANCELLED,
}


__all__ = [
    "MISSING",
    "ActivityHandle",
    "BufferedSignal",
    "ChildHandle",
    "ContinuumError",
    "EngineConfig",
    "Handle",
    "SignalHandle",
    "Suspend",
    "TimerHandle",
    "UpdateRequest",
    "WorkflowContext",
]
