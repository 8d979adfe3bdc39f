"""The worker loop over a `Journal`: advance a run, execute an activity attempt, sweep.

Pure: the Celery tasks and the in-memory test runner both drive this class.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import codec
from .context import EngineConfig
from .definitions import Registry
from .definitions import registry as default_registry
from .exceptions import LeaseLost, UnknownActivity, UnknownWorkflow
from .journal import (
    ActivityClaim,
    Dispatch,
    Eager,
    Journal,
    ParkReason,
    RunClaim,
    StaleClaim,
    VersionKeys,
)
from .replay import Outcome, advance
from .retry import error_payload

logger = logging.getLogger("continuum")

MAX_STALE_RETRIES = 20


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

    def heartbeat(self, details: Any = None) -> None:
        """Report progress; extends the lease and resets the heartbeat timeout."""
        encoded = codec.encode(details, what="heartbeat details")
        if self._runtime.journal.renew_activity(
            self._claim, self._runtime.lease_seconds, encoded, heartbeat=True
        ):
            self._cancelled.set()

    def is_cancelled(self) -> bool:
        """Whether the run asked this activity to stop (cooperative cancellation)."""
        return self._cancelled.is_set()


class _LeaseKeeper(threading.Thread):
    """Renews an activity attempt's lease while its body runs."""

    def __init__(self, runtime: Runtime, claim: ActivityClaim, context: ActivityContext) -> None:
        super().__init__(name=f"continuum-lease-{claim.task_id}", daemon=True)
        self._runtime = runtime
        self._claim = claim
        self._context = context
        self._stopping = threading.Event()

    def run(self) -> None:
        interval = max(self._runtime.lease_seconds / 3, 0.05)
        journal = self._runtime.journal
        try:
            while not self._stopping.wait(interval):
                try:
                    if journal.renew_activity(self._claim, self._runtime.lease_seconds):
                        self._context._cancelled.set()
                except LeaseLost:
                    return
                except Exception:
                    logger.exception("renewing the lease of activity task %s", self._claim.task_id)
        finally:
            journal.on_thread_exit()

    def stop(self) -> None:
        self._stopping.set()
        self.join()


@dataclass(slots=True)
class Runtime:
    journal: Journal
    dispatcher: Dispatcher
    worker_id: str
    lease_seconds: float = 30.0
    config: EngineConfig = field(default_factory=EngineConfig)
    registry: Registry = field(default_factory=lambda: default_registry)
    redispatch_after: float = 10.0
    sweep_limit: int = 500
    rng: random.Random = field(default_factory=random.Random)

    # The steps one Celery task may chain in-process (advance, activity, advance, ...) before
    # it hands the run back to the broker, so that one long run does not hold a worker slot.
    eager_steps: int = 50

    # -- advance -------------------------------------------------------------

    def advance_run(self, run_id: str) -> str:
        """Claim the run, replay it and journal what the code decided. Returns the outcome."""
        claim = self.journal.claim_run(run_id, self.worker_id, self.lease_seconds)
        if claim is None:
            return "skipped"
        return self._drive(claim, self.eager_steps)

    def execute_activity(self, task_id: int) -> str:
        """Run one attempt of an activity task under its lease and record how it ended."""
        claim = self.journal.claim_activity(task_id, self.worker_id, self.lease_seconds)
        if claim is None:
            return "skipped"
        outcome, dispatch = self._execute(claim, eager=True)
        if dispatch is not None and dispatch.eager_run is not None:
            self._drive(dispatch.eager_run, self.eager_steps)
        return outcome

    def _eager(self, allowed: bool) -> Eager | None:
        if not allowed:
            return None
        return Eager(
            owner=self.worker_id, queue=self.config.default_queue, lease_seconds=self.lease_seconds
        )

    def _drive(self, claim: RunClaim, budget: int) -> str:
        """Advance the run, then keep going in this process while each step hands over the
        next one already leased (its activity, then the run the activity woke)."""
        outcome = "skipped"
        next_claim: RunClaim | None = claim
        while next_claim is not None:
            budget -= 1
            outcome, task = self._advance(next_claim, eager=budget > 0)
            next_claim = None
            if task is not None:
                _, dispatch = self._execute(task, eager=budget > 0)
                next_claim = dispatch.eager_run if dispatch is not None else None
        return outcome

    def _advance(self, claim: RunClaim, eager: bool) -> tuple[str, ActivityClaim | None]:
        run_id = claim.run_id
        try:
            for _ in range(MAX_STALE_RETRIES):
                try:
                    definition = self.registry.workflow(claim.workflow_name, claim.version)
                except UnknownWorkflow:
                    detail = self._missing_version(claim.workflow_name, claim.version)
                    logger.warning("run %s parked: %s", run_id, detail)
                    self.journal.park_run(claim, ParkReason.UNKNOWN_VERSION, detail)
                    return "parked", None
                activation = advance(
                    definition,
                    run_id=claim.run_id,
                    history=claim.history,
                    mailbox=claim.mailbox,
                    now=claim.now,
                    config=self.config,
                )
                if activation.outcome == Outcome.DRIFT:
                    logger.error("run %s parked: %s", run_id, activation.drift)
                    self.journal.park_run(claim, ParkReason.DRIFT, activation.drift or "")
                    return "parked", None
                try:
                    dispatch = self.journal.commit_activation(claim, activation, self._eager(eager))
                except StaleClaim:
                    claim = self.journal.refresh_claim(claim, self.lease_seconds)
                    continue
                self.dispatcher.send(dispatch)
                return activation.outcome, dispatch.eager_activity
            raise RuntimeError(f"run {run_id} kept changing under its lease; gave up this time")
        except LeaseLost:
            logger.warning("lost the lease of run %s; another worker carries on", run_id)
            return "lease_lost", None

    def _missing_version(self, name: str, version: int) -> str:
        carried = sorted(v for n, v in self.registry.workflows if n == name)
        has = f"only version {', '.join(map(str, carried))}" if carried else "no version of it"
        return (
            f"worker {self.worker_id} has no {name} version {version} ({has}); it released "
            "the run for a worker that has it"
        )

    def release_parked(self, keys: VersionKeys | None, note: str) -> list[str]:
        """Unpark runs parked on a version (see `Journal.release_parked`) and wake them."""
        dispatch = self.journal.release_parked(keys, note)
        self.dispatcher.send(dispatch)
        return [run_id for run_id, _ in dispatch.runs]

    # -- activities ----------------------------------------------------------

    def _execute(self, claim: ActivityClaim, eager: bool) -> tuple[str, Dispatch | None]:
        """Run the attempt's body under its lease and record how it ended."""
        result: Any = None
        error: dict[str, Any] | None = None
        try:
            definition = self.registry.activity(claim.activity)
        except UnknownActivity as exc:
            error = error_payload(exc) | {"non_retryable": True}
        else:
            context = ActivityContext(self, claim)
            keeper = _LeaseKeeper(self, claim, context)
            keeper.start()
            try:
                args = codec.decode(claim.args)
                kwargs = codec.decode(claim.kwargs)
                if definition.wants_context:
                    kwargs["activity_context"] = context
                value = definition.fn(*args, **kwargs)
                result = codec.encode(
                    value,
                    what=f"result of activity {claim.activity!r}",
                    max_bytes=self.config.max_payload_bytes,
                )
            except Exception as exc:
                error = error_payload(exc)
            finally:
                keeper.stop()
        retry_delay = self._retry_delay(claim, error)
        try:
            dispatch = self.journal.finish_activity(
                claim,
                result=result,
                error=error,
                retry_delay=retry_delay,
                eager=self._eager(eager),
            )
        except LeaseLost:
            logger.warning(
                "discarded the late outcome of activity task %s attempt %s: its lease was lost",
                claim.task_id,
                claim.attempt,
            )
            return "lease_lost", None
        self.dispatcher.send(dispatch)
        if error is None:
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
        dispatch = self.journal.fire_due_timers(self.sweep_limit)
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
            "timers_fired": timers,
            "attempts_timed_out": len(expired),
            "activities_redispatched": len(lost_tasks.activities),
            "runs_redispatched": len(lost_runs.runs),
        }
        self.dispatcher.send(dispatch.merge(lost_tasks).merge(lost_runs))
        return counts
