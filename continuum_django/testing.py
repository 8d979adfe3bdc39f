"""The test kit: run workflows in-process on a clock that skips waits, and replay stored histories.

Pure Python (no database, no broker): the same engine the workers run, over the
in-memory journal, with activities executed inline::

    env = WorkflowEnvironment()
    run = env.start(fulfil_order, "o-1", items)
    run.signal("fraud_review", "approved")
    assert run.result()["status"] == "shipped"

    replay(fulfil_order, "tests/golden/fulfil_order.json")  # raises ReplayDriftError
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .engine import codec
from .engine.clock import FakeClock
from .engine.context import EngineConfig
from .engine.definitions import (
    ActivityDefinition,
    Duration,
    Registry,
    StartOptions,
    WorkflowDefinition,
    to_seconds,
)
from .engine.definitions import registry as default_registry
from .engine.events import Event
from .engine.exceptions import (
    ReplayDriftError,
    ResultTimeout,
    UnknownWorkflow,
    UpdateRejected,
    UpdateTimeout,
    WorkflowCancelled,
    run_failure,
)
from .engine.journal import ParkReason, RunStatus
from .engine.local import LocalRunner, new_run
from .engine.updates import deliver_update, find_reply, reply_value
from .engine.verify import ReplayVerdict, replay_history

__all__ = ["LocalRun", "ReplayVerdict", "WorkflowEnvironment", "load_history", "replay"]


class _WithFakes(Registry):
    """The registry, with some activities' bodies replaced for a test."""

    def __init__(self, base: Registry, fakes: dict[str, ActivityDefinition[..., Any]]) -> None:
        super().__init__()
        self.base = base
        self.fakes = fakes
        self.workflows = base.workflows

    def activity(self, name: str) -> ActivityDefinition[..., Any]:
        return self.fakes.get(name) or self.base.activity(name)


class WorkflowEnvironment:
    """Runs workflows in this process: activities inline, timers on a `FakeClock`.

    ``activities`` maps an activity (or its registered name) to a function run in its
    place, for tests that must not reach the outside world.
    """

    def __init__(
        self,
        *,
        start: dt.datetime | None = None,
        activities: Mapping[ActivityDefinition[..., Any] | str, Callable[..., Any]] | None = None,
        config: EngineConfig | None = None,
        registry: Registry = default_registry,
    ) -> None:
        fakes: dict[str, ActivityDefinition[..., Any]] = {}
        for key, fn in (activities or {}).items():
            real = key if isinstance(key, ActivityDefinition) else registry.activity(key)
            wants_context = "activity_context" in inspect.signature(fn).parameters
            fakes[real.name] = replace(real, fn=fn, wants_context=wants_context)
        self.clock = FakeClock(start)
        self.runner = LocalRunner(
            clock=self.clock,
            config=config,
            registry=_WithFakes(registry, fakes) if fakes else registry,
        )

    def now(self) -> dt.datetime:
        """The environment's clock: it moves only when work waits on it, or when told to."""
        return self.clock.now()

    def start(
        self,
        workflow: WorkflowDefinition[..., Any] | StartOptions[..., Any] | str,
        *args: Any,
        **kwargs: Any,
    ) -> LocalRun:
        """Start a run and do all the work that is due now (time does not move yet).
        ``wf.options(timeout=...)`` gives it a deadline, which the clock honours."""
        run = LocalRun(self, self.runner.start(workflow, *args, **kwargs))
        self.run(skip_time=False)
        return run

    def signal_with_start(
        self,
        workflow: WorkflowDefinition[..., Any] | str,
        signal: str,
        payload: Any = None,
        *args: Any,
        idempotency_key: str,
        **kwargs: Any,
    ) -> LocalRun:
        """Signal the run holding ``idempotency_key``, starting it first when none does
        (see `continuum_django.signal_with_start`); then do the work that is due now."""
        runner = self.runner
        definition = (
            runner.runtime.registry.workflow(workflow) if isinstance(workflow, str) else workflow
        )
        config = runner.runtime.config
        limits: dict[str, Any] = {
            "max_payload_bytes": config.max_payload_bytes,
            "max_payload_depth": config.max_payload_depth,
        }
        new = new_run(definition, args, kwargs, idempotency_key=idempotency_key, **limits)
        encoded = _encode_signal(config, signal, payload)
        run_id, _, dispatch = runner.journal.signal_with_start(new, signal, encoded, None)
        runner.dispatcher.send(dispatch)
        self.run(skip_time=False)
        return LocalRun(self, run_id)

    def run(self, *, skip_time: bool = True) -> None:
        """Do every piece of due work; with ``skip_time``, jump the clock to each next timer
        or retry until nothing is left."""
        self.runner.run_until_idle(skip_time=skip_time)

    def advance(self, duration: Duration) -> None:
        """Move the clock forward by ``duration`` and do the work that became due."""
        seconds = to_seconds(duration, what="duration") or 0.0
        self.clock.advance(seconds)
        self.run(skip_time=False)


class LocalRun:
    """A run in a `WorkflowEnvironment`."""

    def __init__(self, env: WorkflowEnvironment, run_id: str) -> None:
        self.env = env
        self.id = run_id

    @property
    def _stored(self) -> Any:
        return self.env.runner.journal.runs[self.id]

    @property
    def status(self) -> str:
        return str(self._stored.status)

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self._stored.attributes)

    @property
    def state(self) -> dict[str, Any]:
        """What the run published (`WorkflowContext.publish`): each key's last value."""
        return {key: codec.decode(value) for key, value in self._stored.state.items()}

    def history(self) -> list[Event]:
        return self.env.runner.journal.history(self.id)

    def signal(self, name: str, payload: Any = None, dedupe_key: str | None = None) -> None:
        """Deliver a signal and do the work it makes due (time does not move)."""
        runner = self.env.runner
        encoded = _encode_signal(runner.runtime.config, name, payload)
        runner.dispatcher.send(runner.journal.deliver_signal(self.id, name, encoded, dedupe_key))
        self.env.run(skip_time=False)

    def update(self, name: str, payload: Any = None, request_id: str | None = None) -> Any:
        """Send an update as `continuum_django.update` does (its validator first), do the
        work it makes due (time does not move) and return the reply; `UpdateRejected`
        when rejected, `UpdateTimeout` when the run has not answered by then."""
        runner = self.env.runner
        config = runner.runtime.config
        request_id = request_id or str(uuid.uuid4())
        encoded = codec.encode(
            payload,
            what=f"payload of update {name!r}",
            max_bytes=config.max_payload_bytes,
            max_depth=config.max_payload_depth,
        )
        answer = find_reply(self.history(), request_id)
        if answer is None:
            definition = self.env.runner.runtime.registry.workflow(
                self._stored.workflow_name, self._stored.version
            )
            validator = definition.update_validators.get(name)
            if validator is not None:
                try:
                    validator(codec.decode(encoded))
                except Exception as exc:
                    raise UpdateRejected(
                        f"update {name!r} to run {self.id} was rejected by its validator: "
                        f"{type(exc).__name__}: {exc}",
                        run_id=self.id,
                        update=name,
                        request_id=request_id,
                        reason=str(exc),
                    ) from exc
            runner.dispatcher.send(
                deliver_update(runner.journal, self.id, name, request_id, encoded)
            )
            self.env.run(skip_time=False)
            answer = find_reply(self.history(), request_id)
        if answer is None:
            raise UpdateTimeout(
                f"run {self.id} did not answer update {name!r} (request {request_id}) with "
                "the work it could do; move time with advance() or send what it waits for",
                run_id=self.id,
                update=name,
                request_id=request_id,
            )
        return reply_value(answer, self.id)

    def cancel(self, reason: str = "", terminate: bool = False) -> None:
        runner = self.env.runner
        runner.dispatcher.send(runner.journal.request_cancel(self.id, reason, terminate))
        self.env.run(skip_time=False)

    def result(self) -> Any:
        """Run until this run ends, skipping timers; its result, or the error it ended with."""
        self.env.run(skip_time=True)
        stored = self._stored
        if stored.park_reason == ParkReason.DRIFT:
            raise ReplayDriftError(stored.park_detail)
        if stored.park_reason == ParkReason.UNKNOWN_VERSION:
            raise UnknownWorkflow(stored.park_detail)
        if stored.status == RunStatus.COMPLETED:
            return codec.decode(stored.result)
        if stored.status == RunStatus.FAILED:
            raise run_failure(self.id, stored.error or {})
        if stored.status == RunStatus.CANCELLED:
            raise WorkflowCancelled(f"run {self.id} was cancelled", run_id=self.id)
        raise ResultTimeout(
            f"run {self.id} is still {stored.status} with nothing left to do: it waits for "
            "something only the test can give (a signal?)",
            run_id=self.id,
        )

    def to_golden(self) -> dict[str, Any]:
        """The run as a golden-history document (see `load_history`)."""
        stored = self._stored
        outcome: dict[str, Any] = {"status": str(stored.status)}
        if stored.status == RunStatus.COMPLETED:
            outcome["result"] = stored.result
        elif stored.status == RunStatus.FAILED:
            outcome["error_type"] = (stored.error or {}).get("type")
        return {
            "workflow": stored.workflow_name,
            "version": stored.version,
            "input": stored.input,
            "outcome": outcome,
            "events": [_event_json(e) for e in self.history()],
        }


def _encode_signal(config: EngineConfig, name: str, payload: Any) -> Any:
    return codec.encode(
        payload,
        what=f"payload of signal {name!r}",
        max_bytes=config.max_payload_bytes,
        max_depth=config.max_payload_depth,
    )


def _event_json(event: Event) -> dict[str, Any]:
    data = event.to_json()
    data.pop("created_at", None)  # times differ on every recording; replay does not need them
    return data


def load_history(source: str | Path | Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """A golden history: a path to its JSON file, the parsed document, or a bare event list.

    The document holds ``workflow``, ``version``, ``input``, ``outcome`` (``status``, and
    ``result`` or ``error_type``) and ``events`` (``seq``, ``type``, ``command_id``,
    ``payload`` in the codec's JSON form).
    """
    parsed = json.loads(Path(source).read_text()) if isinstance(source, str | Path) else source
    document = dict(parsed) if isinstance(parsed, Mapping) else {"events": list(parsed)}
    document["events"] = [
        e if isinstance(e, Event) else Event.from_json(e) for e in document["events"]
    ]
    return document


def replay(
    workflow: WorkflowDefinition[..., Any], history: str | Path | Mapping[str, Any] | Sequence[Any]
) -> ReplayVerdict:
    """Check that ``history`` still replays on the current code of ``workflow``.

    Raises `ReplayDriftError` naming the first differing command, or when the code no
    longer ends the way the history (or the golden document's ``outcome``) says.
    """
    document = load_history(history)
    name, version = document.get("workflow"), document.get("version")
    if name is not None and name != workflow.name:
        raise ValueError(f"the history is of workflow {name!r}, not {workflow.name!r}")
    if version is not None and version != workflow.version:
        raise ValueError(
            f"the history is of {workflow.name} version {version}; pass that version's "
            f"definition, not version {workflow.version}"
        )
    verdict = replay_history(workflow, document["events"])
    expected = document.get("outcome") or {}
    if verdict.ok and "status" in expected and expected["status"] != verdict.outcome:
        verdict = replace(
            verdict,
            drift=f"replay drift: the history's outcome is {expected['status']}, "
            f"but the code now ends {verdict.outcome}",
        )
    if not verdict.ok:
        raise ReplayDriftError(
            verdict.drift or "replay drift",
            first_difference=verdict.first_difference,
        )
    return verdict
