"""The worker loop over a `Journal`: advance a run, execute an activity attempt, sweep.

Pure: the Celery tasks and the in-memory test runner both drive this class.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from . import codec
from .context import EngineConfig
from .definitions import ActivityDefinition, Registry, WorkflowDefinition
from .definitions import registry as default_registry
from .events import Event, EventType
from .exceptions import LeaseLost, TransactionalActivityError, UnknownActivity, UnknownWorkflow
from .journal import (
    ActivityClaim,
    Dispatch,
    Eager,
    Journal,
    ParkReason,
    RunClaim,
    Speculation,
    StaleClaim,
    Throttled,
    VersionKeys,
    outcome_type,
)
from .observe import Observer
from .replay import Activation, Outcome, advance
from .retry import error_payload

logger = logging.getLogger("continuum")

MAX_STALE_RETRIES = 20


@dataclass(frozen=True, slots=True)
class _Step:
    """What an advance left: its outcome, the activity attempt it leased to this worker, and
    the run as it left it (to speculate the next advance from)."""

    outcome: str
    task: ActivityClaim | None = None
    basis: RunClaim | None = None


@dataclass(frozen=True, slots=True)
class _Ended:
    """How an activity attempt's body ended: its encoded result, or its error payload."""

    result: Any = None
    error: dict[str, Any] | None = None


class _Unjournalable(Exception):
    """A transactional body's result cannot be journaled: ``error`` is its failure."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error


class Dispatcher(Protocol):
    """Sends the hints (Celery messages) that a `Dispatch` lists."""

    def send(self, dispatch: Dispatch) -> None: ...


class ActivityContext:
    """Passed to an activity that takes an ``activity_context`` keyword parameter."""

    def __init__(self, runtime: Runtime, claim: ActivityClaim) -> None:
        self._runtime = runtime
        self._claim = claim
        self._cancelled = threading.Event()
        self.attempt = claim.attempt
        self.run_id = claim.run_id
        self.activity_name = claim.activity
        self.idempotency_key = claim.idempotency_key
        # Set while a transactional body runs: its row locks hold the attempt, not renewals.
        self.in_transaction = False

    def heartbeat(self, details: Any = None) -> None:
        """Report progress; extends the lease and resets the heartbeat timeout. Does nothing
        in a transactional activity (its uncommitted transaction would hide it anyway)."""
        if self.in_transaction:
            return
        encoded = codec.encode(
            details,
            what="heartbeat details",
            max_bytes=self._runtime.config.max_payload_bytes,
            max_depth=self._runtime.config.max_payload_depth,
        )
        if self._runtime.journal.renew_activity(
            self._claim, self._runtime.lease_seconds, encoded, heartbeat=True
        ):
            self._cancelled.set()

    async def aheartbeat(self, details: Any = None) -> None:
        """`heartbeat` for an ``async def`` activity: the journal's write runs in a thread,
        leaving the event loop free (a database call from the loop would block it, and
        Django refuses one there)."""
        await asyncio.to_thread(self._heartbeat_in_thread, details)

    def _heartbeat_in_thread(self, details: Any) -> None:
        try:
            self.heartbeat(details)
        finally:
            self._runtime.journal.on_thread_exit()

    def is_cancelled(self) -> bool:
        """Whether the run asked this activity to stop (cooperative cancellation)."""
        return self._cancelled.is_set()


class _LeaseKeeper:
    """Renews the leases of the activity attempts running in this process, on one thread.

    The thread starts with the first attempt (in the process that runs it: a prefork
    child, not the parent that forked it) and sleeps while none is running.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._held: dict[int, tuple[ActivityClaim, ActivityContext]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, claim: ActivityClaim, context: ActivityContext) -> None:
        with self._lock:
            self._held[claim.task_id] = (claim, context)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._renew_forever, name="continuum-leases", daemon=True
                )
                self._thread.start()

    def release(self, claim: ActivityClaim) -> None:
        with self._lock:
            self._held.pop(claim.task_id, None)

    def _renew_forever(self) -> None:
        interval = max(self._runtime.lease_seconds / 3, 0.05)
        while True:
            time.sleep(interval)
            with self._lock:
                held = list(self._held.values())
            if held:
                self._renew(held)

    def _renew(self, held: list[tuple[ActivityClaim, ActivityContext]]) -> None:
        journal = self._runtime.journal
        try:
            for claim, context in held:
                try:
                    if journal.renew_activity(claim, self._runtime.lease_seconds):
                        context._cancelled.set()
                except LeaseLost:
                    self.release(claim)
                except Exception:
                    logger.exception("renewing the lease of activity task %s", claim.task_id)
        finally:
            journal.on_thread_exit()  # no idle connection kept between rounds


@dataclass(slots=True)
class Runtime:
    journal: Journal
    dispatcher: Dispatcher
    worker_id: str
    lease_seconds: float = 30.0
    config: EngineConfig = field(default_factory=EngineConfig)
    registry: Registry = field(default_factory=lambda: default_registry)
    redispatch_after: float = 10.0
    # Unexpected errors in a row (at one revision of a run) before the run is parked.
    quarantine_after: int = 5
    observer: Observer = field(default_factory=Observer)
    sweep_limit: int = 500
    # Batches of due timers (``sweep_limit`` runs each) one sweep fires before it sends
    # their runs' advances: a burst due at once is journaled without waiting on the broker.
    timer_batches: int = 20
    rng: random.Random = field(default_factory=random.Random)

    # How long one Celery task may chain a run's steps in-process (advance, activity,
    # advance, ...) before it hands the run back to the broker, so that one long run does
    # not hold a worker slot: this many steps, or this many seconds, whichever comes first.
    eager_steps: int = 200
    eager_seconds: float = 2.0
    monotonic: Callable[[], float] = time.monotonic  # the clock of `eager_seconds`
    # The wall clock of a new run's first advance, when its message spares it the read that
    # would give it the database's (`advance_run` with ``started``); if the code reads the
    # time, that advance is redone from a read of the run, on the database's clock.
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    _leases: _LeaseKeeper = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._leases = _LeaseKeeper(self)

    # -- advance -------------------------------------------------------------

    def advance_run(self, run_id: str, started: dict[str, Any] | None = None) -> str:
        """Replay the run and journal what the code decided. Returns the outcome.

        An unexpected error is counted against the run before it propagates: after
        ``quarantine_after`` in a row the run is parked (see `_failed`).
        """
        try:
            with self.observer.advancing(run_id, started):
                return self._advance_run(run_id, started)
        except Exception as exc:
            self._failed(run_id, exc)
            raise

    def _advance_run(self, run_id: str, started: dict[str, Any] | None) -> str:
        """`advance_run`'s work.

        First optimistically, from the run as it stands (no lease, one transaction); when
        the journal offers no snapshot or the run changed meanwhile, under a lease.
        ``started`` (a new run's ``run_started`` payload, from `Dispatch.starts`) stands for
        the snapshot of a run nothing has touched since it was created: if anything did,
        the optimistic write finds the run changed, and the advance starts over from a read.
        It is a hint: that write also requires the stored ``run_started`` to equal it, so a
        forged or stale one writes nothing and the advance starts over from a read too.
        """
        eager = self.eager_steps > 1
        step: _Step | None = None
        as_started = self._as_started(run_id, started) if started is not None else None
        if as_started is not None:
            step = self._advance_optimistically(as_started, eager, worker_clock=True)
        if step is None:
            snapshot = self.journal.snapshot_run(run_id)
            if snapshot is not None:
                step = self._advance_optimistically(snapshot, eager)
        if step is None:
            claim = self.journal.claim_run(run_id, self.worker_id, self.lease_seconds)
            step = _Step("skipped") if claim is None else self._advance(claim, eager)
        return self._chain(step, self.eager_steps - 1, self.monotonic() + self.eager_seconds)

    def _as_started(self, run_id: str, started: dict[str, Any]) -> RunClaim | None:
        """The run as its creation left it (revision 1, its ``run_started`` event alone, no
        signals), at this worker's clock; None when ``started`` is not such a payload."""
        try:
            name, version = str(started["workflow"]), int(started["version"])
            if started.get("parent_run_id") or started.get("continued_from"):
                return None  # not a run `start()` made
        except (KeyError, TypeError, ValueError):
            return None
        now = self.clock()
        first = Event(seq=1, type=EventType.RUN_STARTED, payload=started, created_at=now)
        return RunClaim(
            run_id=run_id,
            token=0,
            revision=1,
            parent_run_id=None,
            workflow_name=name,
            version=version,
            history=[first],
            mailbox=[],
            now=now,
            optimistic=True,
        )

    def execute_activity(self, task_id: int) -> str:
        """Run one attempt of an activity task under its lease and record how it ended."""
        claim = self.journal.claim_activity(task_id, self.worker_id, self.lease_seconds)
        if claim is None:
            return "skipped"
        if isinstance(claim, Throttled):  # it waits in the journal; the dispatch wakes it
            self.dispatcher.send(claim.dispatch)
            return "throttled"
        until = self.monotonic() + self.eager_seconds
        try:
            outcome, step = self._complete(claim, None, self.eager_steps)
            if step is not None:
                self._chain(step, self.eager_steps - 1, until)
        except Exception as exc:
            self._failed(claim.run_id, exc)
            raise
        return outcome

    def _failed(self, run_id: str, exc: Exception) -> None:
        """Count an unexpected error against the run; park it (`ParkReason.ERROR`) once
        ``quarantine_after`` advances or completions in a row failed, so that a poison run
        waits for an operator instead of looping through the sweep."""
        try:
            parked = self.journal.record_failure(run_id, exc, self.quarantine_after)
        except Exception:
            logger.exception("could not record the failure of run %s", run_id)
            return
        if parked:
            logger.error(
                "run %s parked after %d failures in a row; the last: %r",
                run_id,
                self.quarantine_after,
                exc,
            )

    def _eager(self, allowed: bool) -> Eager | None:
        if not allowed:
            return None
        return Eager(
            owner=self.worker_id, queue=self.config.default_queue, lease_seconds=self.lease_seconds
        )

    def _chain(self, step: _Step, budget: int, until: float) -> str:
        """Keep going in this process while each step hands over the next one already leased
        (an activity, then the advance of the run it wakes). Returns the last advance's outcome.

        ``budget`` counts the advances this Celery task may still chain, and ``until`` (on
        `monotonic`) is when it stops chaining, before it hands the run back to the broker.
        """
        while step.task is not None:
            if self.monotonic() >= until:
                budget = 0  # record the leased activity's outcome; the run goes to the broker
            _, following = self._complete(step.task, step.basis, budget)
            if following is None:
                break
            step = following
            budget -= 1
        return step.outcome

    def _complete(
        self, claim: ActivityClaim, basis: RunClaim | None, budget: int
    ) -> tuple[str, _Step | None]:
        """Run the attempt, record how it ended and, when that wakes the run and ``budget``
        allows, advance the run at once.

        With ``basis`` (the run as its last activation left it) the advance is replayed
        before the result is written, and both commit together if the run did not change
        meanwhile. Returns the attempt's outcome and the advance (None when there was none).
        """
        started = time.monotonic()
        context = ActivityContext(self, claim)
        atomic = self._transactional(claim)
        if atomic is None:  # a transactional attempt holds the task's row lock instead
            self._leases.hold(claim, context)
        try:  # the lease is kept until the outcome is written, speculation included
            with self.observer.attempting(claim):
                speculation = None
                if atomic is not None:
                    ended, outcome, dispatch = self._attempt_atomically(
                        claim, context, atomic, budget > 0
                    )
                else:
                    ended = self._run_body(claim, context)
                    if budget > 0 and basis is not None and ended.error is None:
                        speculation = self._speculate(claim, ended, basis, started, budget > 1)
                    outcome, dispatch = self._finish(claim, ended, budget > 0, speculation)
                self._tell("attempted", claim, outcome, ended.error, time.monotonic() - started)
        finally:
            self._leases.release(claim)
        if dispatch is None:
            return outcome, None
        if dispatch.advanced is not None:
            if speculation is not None:
                self._tell("advanced", speculation.claim, speculation.activation)
            return outcome, _Step(dispatch.advanced, dispatch.eager_activity, dispatch.basis)
        if dispatch.eager_run is None:
            return outcome, None
        return outcome, self._advance(dispatch.eager_run, budget > 1)

    def _speculate(
        self, claim: ActivityClaim, ended: _Ended, basis: RunClaim, since: float, eager: bool
    ) -> Speculation | None:
        """The activation the run will make once the attempt's result is in its history."""
        event = Event(
            seq=len(basis.history) + 1,
            type=outcome_type(claim.kind, failed=False),
            command_id=claim.command_id,
            payload={"result": ended.result},
        )
        # The journal's clock, moved on by the time the body took (the advance sees it).
        now = basis.now + dt.timedelta(seconds=time.monotonic() - since)
        speculative = replace(basis, history=[*basis.history, event], now=now)
        activation = self._activation(speculative)
        if activation is None:
            return None
        return Speculation(claim=speculative, activation=activation, eager=self._eager(eager))

    def _activation(self, claim: RunClaim) -> Activation | None:
        """Replay the run; None when this worker lacks its version or the code drifted."""
        try:
            definition = self.registry.workflow(claim.workflow_name, claim.version)
        except UnknownWorkflow:
            return None
        activation = self._replay(definition, claim)
        return None if activation.outcome == Outcome.DRIFT else activation

    def _replay(self, definition: WorkflowDefinition[..., Any], claim: RunClaim) -> Activation:
        return advance(
            definition,
            run_id=claim.run_id,
            history=claim.history,
            mailbox=claim.mailbox,
            now=claim.now,
            config=self.config,
        )

    def _advance_optimistically(
        self, claim: RunClaim, eager: bool, worker_clock: bool = False
    ) -> _Step | None:
        """Advance from a snapshot; None when the run changed (or must park): nothing written.
        (``worker_clock``: the claim's time is this worker's, not the journal's; an
        activation that read it is not written either, the journal's clock decides it.)"""
        activation = self._activation(claim)
        if activation is None:
            return None  # parking needs the lease
        if worker_clock and activation.read_clock:
            return None
        try:
            dispatch = self.journal.commit_activation(claim, activation, self._eager(eager))
        except (StaleClaim, LeaseLost):
            return None
        self.dispatcher.send(dispatch)
        self._tell("advanced", claim, activation)
        return _Step(activation.outcome, dispatch.eager_activity, dispatch.basis)

    def _advance(self, claim: RunClaim, eager: bool) -> _Step:
        """Replay the run leased by ``claim`` and journal its activation (or park it)."""
        run_id = claim.run_id
        try:
            for _ in range(MAX_STALE_RETRIES):
                try:
                    definition = self.registry.workflow(claim.workflow_name, claim.version)
                except UnknownWorkflow:
                    detail = self._missing_version(claim.workflow_name, claim.version)
                    logger.warning("run %s parked: %s", run_id, detail)
                    self.journal.park_run(claim, ParkReason.UNKNOWN_VERSION, detail)
                    self._tell("parked", run_id, ParkReason.UNKNOWN_VERSION, detail)
                    return _Step("parked")
                activation = self._replay(definition, claim)
                if activation.outcome == Outcome.DRIFT:
                    logger.error("run %s parked: %s", run_id, activation.drift)
                    self.journal.park_run(claim, ParkReason.DRIFT, activation.drift or "")
                    self._tell("parked", run_id, ParkReason.DRIFT, activation.drift or "")
                    return _Step("parked")
                try:
                    dispatch = self.journal.commit_activation(claim, activation, self._eager(eager))
                except StaleClaim:
                    claim = self.journal.refresh_claim(claim, self.lease_seconds)
                    continue
                self.dispatcher.send(dispatch)
                self._tell("advanced", claim, activation)
                return _Step(activation.outcome, dispatch.eager_activity, dispatch.basis)
            raise RuntimeError(f"run {run_id} kept changing under its lease; gave up this time")
        except LeaseLost:
            logger.warning("lost the lease of run %s; another worker carries on", run_id)
            return _Step("lease_lost")

    def _missing_version(self, name: str, version: int) -> str:
        carried = sorted(v for n, v in self.registry.workflows if n == name)
        has = f"only version {', '.join(map(str, carried))}" if carried else "no version of it"
        return (
            f"worker {self.worker_id} has no {name} version {version} ({has}); it released "
            "the run for a worker that has it. A worker knows the workflows of the modules it "
            "imports at start-up: each installed app's workflows module, or those listed in "
            "CONTINUUM['WORKFLOW_MODULES']; define the workflow in one of them (manage.py "
            "check warns, continuum.W022, about one defined elsewhere) and release the run"
        )

    def release_parked(self, keys: VersionKeys | None, note: str) -> list[str]:
        """Unpark runs parked on a version (see `Journal.release_parked`) and wake them."""
        dispatch = self.journal.release_parked(keys, note)
        self.dispatcher.send(dispatch)
        return [run_id for run_id, _ in dispatch.runs]

    # -- activities ----------------------------------------------------------

    def _run_body(self, claim: ActivityClaim, context: ActivityContext) -> _Ended:
        """Run the attempt's body: its encoded result or its error."""
        try:
            definition = self.registry.activity(claim.activity)
        except UnknownActivity as exc:
            return _Ended(error=error_payload(exc) | {"non_retryable": True})
        try:
            value = self._call(definition, claim, context)
        except Exception as exc:
            return _Ended(error=error_payload(exc))
        try:
            return _Ended(result=self._encode_result(claim, value))
        except Exception as exc:
            # Running the body again would only make the same value, its effects repeated:
            # a result that cannot be journaled fails the activity once, for good.
            return _Ended(error=error_payload(exc) | {"non_retryable": True})

    @staticmethod
    def _call(
        definition: ActivityDefinition[..., Any], claim: ActivityClaim, context: ActivityContext
    ) -> Any:
        args = codec.decode(claim.args)
        kwargs = codec.decode(claim.kwargs)
        if definition.wants_context:
            kwargs["activity_context"] = context
        value = definition.fn(*args, **kwargs)
        if inspect.iscoroutine(value):  # an `async def` activity: run it to its end
            value = asyncio.run(value)
        return value

    def _encode_result(self, claim: ActivityClaim, value: Any) -> Any:
        return codec.encode(
            value,
            what=f"result of activity {claim.activity!r}",
            max_bytes=self.config.max_payload_bytes,
            max_depth=self.config.max_payload_depth,
        )

    def _transactional(self, claim: ActivityClaim) -> ActivityDefinition[..., Any] | None:
        """The attempt's definition when it is a transactional activity, else None."""
        try:
            definition = self.registry.activity(claim.activity)
        except UnknownActivity:
            return None  # `_run_body` fails it
        return definition if definition.transactional else None

    def _attempt_atomically(
        self,
        claim: ActivityClaim,
        context: ActivityContext,
        definition: ActivityDefinition[..., Any],
        eager: bool,
    ) -> tuple[_Ended, str, Dispatch | None]:
        """Run a transactional attempt's body inside the transaction that journals its
        completion. When it raises, its writes are rolled back and the failure is journaled
        in a transaction of its own, the retry policy applying as usual."""

        context.in_transaction = True

        def body() -> Any:
            value = self._call(definition, claim, context)
            try:
                return self._encode_result(claim, value)
            except Exception as exc:
                raise _Unjournalable(error_payload(exc) | {"non_retryable": True}) from exc

        try:
            dispatch = self.journal.finish_in_transaction(
                claim, body, using=definition.using, eager=self._eager(eager)
            )
        except LeaseLost:
            logger.warning(
                "rolled back attempt %s of transactional activity task %s: its lease was lost",
                claim.attempt,
                claim.task_id,
            )
            return _Ended(), "lease_lost", None
        except _Unjournalable as exc:
            ended = _Ended(error=exc.error)
        except TransactionalActivityError as exc:
            ended = _Ended(error=error_payload(exc) | {"non_retryable": True})
        except Exception as exc:
            ended = _Ended(error=error_payload(exc))
        else:
            if dispatch is None:
                return _Ended(), "cancelled", None
            self.dispatcher.send(dispatch)
            return _Ended(), "completed", dispatch
        outcome, dispatch = self._finish(claim, ended, eager)
        return ended, outcome, dispatch

    def _finish(
        self,
        claim: ActivityClaim,
        ended: _Ended,
        eager: bool,
        speculation: Speculation | None = None,
    ) -> tuple[str, Dispatch | None]:
        """Record how the attempt ended (and the speculated advance, when it still holds)."""
        retry_delay = self._retry_delay(claim, ended.error)
        try:
            dispatch = self.journal.finish_activity(
                claim,
                result=ended.result,
                error=ended.error,
                retry_delay=retry_delay,
                eager=self._eager(eager),
                then=speculation,
            )
        except LeaseLost:
            logger.warning(
                "discarded the late outcome of activity task %s attempt %s: its lease was lost",
                claim.task_id,
                claim.attempt,
            )
            return "lease_lost", None
        self.dispatcher.send(dispatch)
        if ended.error is None:
            return "completed", dispatch
        return ("retrying" if retry_delay is not None else "failed"), dispatch

    def _retry_delay(self, claim: ActivityClaim, error: dict[str, Any] | None) -> float | None:
        if error is None:
            return None
        if not claim.retry.retries_after(claim.attempt, error["type"], error["non_retryable"]):
            return None
        return claim.retry.delay(claim.attempt, self.rng)

    # -- sweep ---------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        """Fire due timers, time out lost or late attempts, re-send lost messages."""
        started = time.monotonic()
        # Runs past their deadline first: their timers and tasks then need no more work.
        late = self.journal.time_out_runs(self.sweep_limit)
        dispatch = self._fire_due_timers()
        timers = len(dispatch.runs)
        expired = self.journal.expired_activities(self.sweep_limit)
        for claim in expired:
            error = {"type": "continuum.ActivityTimeout", "non_retryable": False}
            delay = (
                None
                if claim.timeout_reason == "schedule_to_close"
                else self._retry_delay(claim, error)
            )
            try:
                dispatch.merge(self.journal.time_out_activity(claim, delay))
            except LeaseLost:
                continue
        lost_tasks = self.journal.due_activities(self.sweep_limit, self.redispatch_after)
        lost_runs = self.journal.due_runs(self.sweep_limit, self.redispatch_after)
        counts = {
            "runs_timed_out": len(late.timed_out),
            "timers_fired": timers,
            "attempts_timed_out": len(expired),
            "activities_redispatched": len(lost_tasks.activities),
            "runs_redispatched": len(lost_runs.runs),
        }
        self.dispatcher.send(late.merge(dispatch).merge(lost_tasks).merge(lost_runs))
        self._tell("swept", counts, time.monotonic() - started)
        return counts

    def _fire_due_timers(self) -> Dispatch:
        """Fire due timers batch after batch while a batch is full, up to `timer_batches`."""
        dispatch = Dispatch()
        for _ in range(self.timer_batches):
            batch = self.journal.fire_due_timers(self.sweep_limit)
            dispatch.merge(batch)
            if len(batch.runs) < self.sweep_limit:
                break
        return dispatch

    def _tell(self, hook: str, *args: Any) -> None:
        """Call the observer's ``hook``; what it raises is logged, never the runtime's fault."""
        try:
            getattr(self.observer, hook)(*args)
        except Exception:
            logger.exception("the observer's %s hook raised", hook)
