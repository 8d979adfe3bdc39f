"""Run workflows in-process over a `MemoryJournal`: the engine tests and the testing kit use it."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from . import codec
from .clock import FakeClock
from .context import EngineConfig
from .definitions import (
    START_FLOW_OPTIONS,
    Duration,
    Registry,
    StartOptions,
    WorkflowDefinition,
    check_timeout,
    registry,
)
from .flow import FlowControl
from .journal import Dispatch, NewRun, RunStatus
from .memory import MemoryJournal
from .runtime import Runtime


def new_run(
    definition: WorkflowDefinition[..., Any],
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    namespace: str = "default",
    attributes: dict[str, Any] | None = None,
    max_payload_bytes: int | None = None,
    max_payload_depth: int = codec.DEFAULT_MAX_DEPTH,
    run_id: str | None = None,
    timeout: Duration | None = None,
    flow: FlowControl | None = None,
) -> NewRun:
    """Validate and encode what starting ``definition`` needs; raises `PayloadError`.
    The args and kwargs are one input: ``max_payload_bytes`` bounds them together.
    ``timeout``: the run's deadline, that long after it is stored (see `check_timeout`).
    ``flow``: the start's limits (the workflow's declared ones by default), its key
    evaluated from the arguments; raises `FlowControlError` when it cannot be."""
    flow = flow or definition.flow
    limits_of_start = flow.start_payload(definition.fn, definition.name, args, dict(kwargs or {}))
    limits: dict[str, Any] = {"max_bytes": max_payload_bytes, "max_depth": max_payload_depth}
    what = f"input of workflow {definition.name!r}"
    call = codec.encode_many(
        {"input.args": list(args), "input.kwargs": dict(kwargs or {})}, what=what, **limits
    )
    return NewRun(
        run_id=run_id or str(uuid.uuid4()),
        workflow_name=definition.name,
        version=definition.version,
        version_hash=definition.version_hash,
        input={"args": call["input.args"], "kwargs": call["input.kwargs"]},
        namespace=namespace,
        attributes=codec.encode(dict(attributes or {}), what="attributes", **limits),
        idempotency_key=idempotency_key,
        seed=secrets.randbits(63),
        timeout=check_timeout(timeout),
        flow=limits_of_start,
    )


class LocalDispatcher:
    """Collects dispatched work; `LocalRunner` drains it in order of due time."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Any, dt.datetime | None]] = []

    def send(self, dispatch: Dispatch) -> None:
        self.pending.extend(("run", run_id, eta) for run_id, eta in dispatch.runs)
        self.pending.extend(("activity", task_id, eta) for task_id, _, eta in dispatch.activities)


class LocalRunner:
    """Drives runs in this process with activities inline and a clock that skips waits."""

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        config: EngineConfig | None = None,
        lease_seconds: float = 30.0,
        eager_steps: int = 0,
        registry: Registry = registry,
    ) -> None:
        self.clock = clock or FakeClock()
        self.journal = MemoryJournal(self.clock)
        self.dispatcher = LocalDispatcher()
        self.runtime = Runtime(
            journal=self.journal,
            dispatcher=self.dispatcher,
            worker_id="local",
            lease_seconds=lease_seconds,
            config=config or EngineConfig(),
            registry=registry,
            eager_steps=eager_steps,
        )

    def start(
        self,
        workflow: WorkflowDefinition[..., Any] | StartOptions[..., Any] | str,
        *args: Any,
        **kwargs: Any,
    ) -> str:
        """Start a run; ``wf.options(...)`` gives it start options (a ``timeout`` too)."""
        options: dict[str, Any] = {}
        if isinstance(workflow, StartOptions):
            options = dict(workflow.options)
            workflow = workflow.workflow
        names = self.runtime.registry
        definition = names.workflow(workflow) if isinstance(workflow, str) else workflow
        limits = {k: options.pop(k) for k in START_FLOW_OPTIONS if k in options}
        # Recorded in run_started, not enforced: the in-memory journal admits every start.
        new = new_run(definition, args, kwargs, flow=definition.start_flow(**limits), **options)
        run_id, _, dispatch = self.journal.create_run(new)
        self.dispatcher.send(dispatch)
        return run_id

    def step(self) -> bool:
        """Do the next piece of due work; False when nothing is due now."""
        now = self.clock.now()
        for index, (kind, target, eta) in enumerate(self.dispatcher.pending):
            if eta is None or eta <= now:
                del self.dispatcher.pending[index]
                if kind == "run":
                    self.runtime.advance_run(target)
                else:
                    self.runtime.execute_activity(target)
                return True
        return False

    def run_until_idle(self, *, skip_time: bool = True, max_steps: int = 10_000) -> None:
        """Work until nothing is left; with ``skip_time``, jump the clock to the next due work."""
        for _ in range(max_steps):
            if self.step():
                continue
            self.dispatcher.send(self.journal.time_out_runs(1000))
            self.dispatcher.send(self.journal.fire_due_timers(1000))
            if self.step():
                continue
            if not skip_time:
                return
            due = self._next_due()
            if due is None:
                return
            self.clock.set(max(due, self.clock.now()))
        raise RuntimeError(f"runs still busy after {max_steps} steps")

    def _next_due(self) -> dt.datetime | None:
        times = [eta for _, _, eta in self.dispatcher.pending if eta is not None]
        times += [t.fire_at for t in self.journal.timers.values() if not (t.fired or t.cancelled)]
        times += [
            r.deadline
            for r in self.journal.runs.values()
            if r.deadline is not None and r.status not in RunStatus.TERMINAL
        ]
        return min(times) if times else None
