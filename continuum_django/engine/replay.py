"""The engine's one verb: a run's history in, the activation's new events and outcome out.

The live worker, the replay check and the testing kit all call `advance`.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .context import BufferedSignal, EngineConfig, HistoryIndex, Suspend, WorkflowContext
from .definitions import WorkflowDefinition, in_workflow, registry
from .events import Event, EventType, NewEvent
from .exceptions import (
    CancellationRequested,
    ContinueAsNew,
    ReplayDriftError,
    UnknownWorkflow,
    WorkflowUsageError,
)
from .retry import error_payload


class Outcome:
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CONTINUED = "continued"
    DRIFT = "drift"


@dataclass(frozen=True, slots=True, kw_only=True)
class Activation:
    """What one execution of the workflow code decided."""

    outcome: str
    events: list[NewEvent] = field(default_factory=list)
    result: Any = None
    error: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None
    # The run's whole published state when the activation published something, else None.
    state: dict[str, Any] | None = None
    drift: str | None = None
    # Where replay diverged: position, recorded command id, issued command id (None when
    # the code ended or waited before reaching it), and the recorded event's seq.
    drift_command: dict[str, Any] | None = None
    waiting_for: str | None = None
    # Whether the code read the clock it was given (ctx.now(), a timer's due time).
    read_clock: bool = False


def advance(
    definition: WorkflowDefinition[..., Any],
    *,
    run_id: str,
    history: Sequence[Event],
    mailbox: Iterable[BufferedSignal] = (),
    now: dt.datetime,
    config: EngineConfig | None = None,
) -> Activation:
    """Replay ``history`` through the workflow code and run it until it suspends or ends."""
    if not history or history[0].type != EventType.RUN_STARTED:
        raise ValueError(f"history of run {run_id} does not begin with run_started")
    config = config or EngineConfig()
    index = _indexes.of(run_id, history)
    ctx = WorkflowContext(
        run_id=run_id,
        workflow_name=definition.name,
        history=history,
        mailbox=mailbox,
        now=now,
        config=config,
        index=index,
    )
    started = history[0].payload
    args = codec.decode(started["input"]["args"])
    kwargs = codec.decode(started["input"]["kwargs"])
    already_ended = index.ended

    token = in_workflow.set(True)
    try:
        value = definition.fn(ctx, *args, **kwargs)
    except Suspend:
        outcome, value, error = Outcome.SUSPENDED, None, None
    except CancellationRequested:
        outcome, value, error = Outcome.CANCELLED, None, None
    except ContinueAsNew as request:
        outcome, value, error = Outcome.CONTINUED, request.input, None
    except ReplayDriftError as exc:
        ctx.drift = ctx.drift or exc
        outcome, value, error = Outcome.DRIFT, None, None
    except Exception as exc:
        outcome, value, error = Outcome.FAILED, None, error_payload(exc)
    else:
        outcome, error = Outcome.COMPLETED, None
    finally:
        in_workflow.reset(token)

    if ctx.drift is not None:
        expected = getattr(ctx.drift, "expected", None)
        point = {
            "position": getattr(ctx.drift, "position", None),
            "recorded": expected,
            "issued": getattr(ctx.drift, "actual", None),
            "seq": next((e.seq for e in history if expected and e.command_id == expected), None),
        }
        return Activation(outcome=Outcome.DRIFT, drift=str(ctx.drift), drift_command=point)
    if ctx.suspended_at is not None and outcome != Outcome.SUSPENDED:
        # The code caught the suspension (bare except) and went on: fail loudly.
        outcome, error = (
            Outcome.FAILED,
            error_payload(
                WorkflowUsageError(
                    f"workflow code swallowed the engine's suspension at {ctx.suspended_at} "
                    "(a bare `except:` or `except BaseException:`); catch Exception instead"
                )
            ),
        )
    if outcome != Outcome.SUSPENDED and ctx.unmatched_commands:
        first = ctx.unmatched_commands[0]
        return Activation(
            outcome=Outcome.DRIFT,
            drift=f"replay drift: the workflow {outcome} without issuing the recorded command "
            f"{first.command_id!r} ({first.type} at seq {first.seq})",
            drift_command=_unreached(first),
        )
    if outcome == Outcome.SUSPENDED and ctx.unmatched_commands:
        first = ctx.unmatched_commands[0]
        return Activation(
            outcome=Outcome.DRIFT,
            drift=f"replay drift: the workflow waits at {ctx.suspended_at} before reaching the "
            f"recorded command {first.command_id!r} ({first.type} at seq {first.seq})",
            drift_command=_unreached(first),
        )
    if index.timed_out is not None:
        # The journal ended the run at its deadline, wherever its code had got to: replay
        # ends it the same way, so a timed-out history replays to its recorded end.
        outcome, value, error = Outcome.FAILED, None, index.timed_out.payload["error"]
    cleanup_error = None
    if index.cancel is not None and outcome != Outcome.SUSPENDED and index.timed_out is None:
        # A run asked to stop ends cancelled, whatever its code did after the request:
        # returned, continued, or raised (in its cleanup or before it reached one). What it
        # raised is kept with the end (`run_cancelled`'s ``cleanup_error``, the run's error).
        if outcome == Outcome.FAILED:
            cleanup_error = error
        outcome, value, error = Outcome.CANCELLED, None, cleanup_error
    if outcome == Outcome.COMPLETED:
        try:
            value = codec.encode(
                value,
                what="workflow result",
                max_bytes=config.max_payload_bytes,
                max_depth=config.max_payload_depth,
            )
        except Exception as exc:
            outcome, error = Outcome.FAILED, error_payload(exc)

    events = list(ctx.new_events)
    if not already_ended:
        if outcome == Outcome.COMPLETED:
            events.append(NewEvent(type=EventType.RUN_COMPLETED, payload={"result": value}))
        elif outcome == Outcome.FAILED:
            events.append(NewEvent(type=EventType.RUN_FAILED, payload={"error": error}))
        elif outcome == Outcome.CONTINUED:
            events.append(
                NewEvent(
                    type=EventType.RUN_CONTINUED, payload=_successor(definition, run_id, value)
                )
            )
        elif outcome == Outcome.CANCELLED:
            reason = ((index.cancel.payload if index.cancel else None) or {}).get("reason", "")
            payload = {"reason": reason}
            if cleanup_error is not None:
                payload["cleanup_error"] = cleanup_error
            events.append(NewEvent(type=EventType.RUN_CANCELLED, payload=payload))
    return Activation(
        outcome=outcome,
        events=events,
        result=value if outcome == Outcome.COMPLETED else None,
        error=error,
        attributes=ctx.attributes,
        state=ctx.published_state,
        waiting_for=ctx.suspended_at,
        read_clock=ctx.read_clock,
    )


def _successor(
    definition: WorkflowDefinition[..., Any], run_id: str, input: dict[str, Any]
) -> dict[str, Any]:
    """The ``run_continued`` payload: the successor runs the newest version of the workflow."""
    try:
        newest = registry.workflow(definition.name)
    except UnknownWorkflow:  # a definition used without registering it (tests, replay checks)
        newest = definition
    next_id = uuid.uuid5(uuid.NAMESPACE_URL, f"continuum:{run_id}/continue")
    return {
        "next_run_id": str(next_id),
        "workflow": newest.name,
        "version": newest.version,
        "version_hash": newest.version_hash,
        "input": input,
        "seed": next_id.int >> 66,
    }


def _unreached(recorded: Event) -> dict[str, Any]:
    position = int(recorded.command_id.split(":", 1)[0])
    return {
        "position": position,
        "recorded": recorded.command_id,
        "issued": None,
        "seq": recorded.seq,
    }


class _Indexes:
    """The history indexes of the runs this process replayed last, so that the next advance
    of a run extends its index by the new events instead of rebuilding it (the replay of a
    long run is otherwise mostly that). Bounded, like the journal's history cache, and
    forgets a run once its history ends; safe across threads."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._by_run: OrderedDict[str, HistoryIndex] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, run_id: str, history: Sequence[Event]) -> HistoryIndex:
        """The index of ``history``, extended from the one kept for the run when ``history``
        continues it.

        What is kept is the index of ``history`` but its last event: that last event may
        be provisional (a speculated advance replays with the attempt's result before it
        is written, and the history read or remembered after the write holds the written
        event, another object), while the events before it are the ones the run's next
        history begins with. Keeping the full index would let every speculated step
        rebuild the index of the whole history, all of a long run's replay.
        """
        settled = history[:-1]
        with self._lock:
            known = self._by_run.get(run_id)
        if known is not None and known.extends_to(settled):
            base = known.extended(settled)
        else:
            base = HistoryIndex.of(settled)
        index = base.extended(history)
        with self._lock:
            if index.ended:  # it will not advance again: keep no memory of it
                self._by_run.pop(run_id, None)
                return index
            self._by_run[run_id] = base
            self._by_run.move_to_end(run_id)
            while len(self._by_run) > self._size:
                self._by_run.popitem(last=False)
        return index


_indexes = _Indexes()
