"""Django signals for the lifecycle of runs, activities, timers and signals.

Receivers run after the write they report has committed, in the process that made it:
the web process for `run_started`, `signal_sent` and `cancel_requested`; a worker for
the rest. A receiver that raises is logged and ignored (`send_robust`). Names and
arguments are stable; every signal also gets ``sender`` (the model the event concerns).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from .engine.events import EventType
from .engine.journal import ActivityClaim, RunClaim, RunStatus
from .engine.observe import Observer
from .engine.replay import Activation, Outcome
from .journal import internals
from .models import ActivityTask, Timer, WorkflowRun
from .models import Signal as MailboxSignal

logger = logging.getLogger("continuum")

#: A run was started: ``run_id``, ``workflow``, ``version``.
run_started = Signal()
#: An activation of a run was written: ``run_id``, ``workflow``, ``outcome`` (suspended,
#: completed, failed, cancelled, continued), ``events`` (the new events' types).
run_advanced = Signal()
#: A run ended: ``run_id``, ``workflow``, ``status``, ``error`` (None unless failed or a
#: cleanup raised).
run_ended = Signal()
#: A run was parked: ``run_id``, ``reason`` (drift, unknown_version, error), ``detail``.
run_parked = Signal()
#: A run was asked to cancel: ``run_id``, ``reason``, ``terminate``.
cancel_requested = Signal()
#: An activation scheduled an activity (or a compensation): ``run_id``, ``command_id``,
#: ``activity``, ``kind``.
activity_scheduled = Signal()
#: An activity attempt ended: ``run_id``, ``task_id``, ``activity``, ``attempt``,
#: ``outcome`` (completed, retrying, failed, lease_lost, cancelled), ``error``, ``seconds``.
activity_attempted = Signal()
#: An activation started a durable timer: ``run_id``, ``command_id``, ``fire_at``.
timer_scheduled = Signal()
#: A signal was delivered to a run's mailbox: ``run_id``, ``name``.
signal_sent = Signal()
#: A run took a signal from its mailbox: ``run_id``, ``name``.
signal_received = Signal()
#: A sweep ran: ``counts`` (runs_timed_out, timers_fired, attempts_timed_out,
#: activities_redispatched, runs_redispatched), ``seconds``.
sweep_finished = Signal()


def _send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    for receiver, response in signal.send_robust(sender, **kwargs):
        if isinstance(response, Exception):
            logger.error("receiver %r of a continuum signal raised %r", receiver, response)


def after_commit(using: str, signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal`` once the current transaction on ``using`` commits (at once outside
    one); nothing when no receiver listens, so an unobserved start costs nothing."""
    if internals.listened(signal, sender):
        transaction.on_commit(lambda: _send(signal, sender, **kwargs), using=using)


class SignalObserver(Observer):
    """Turns the runtime's hooks into the Django signals above."""

    def advanced(self, claim: RunClaim, activation: Activation) -> None:
        if not any(internals.listened(signal, sender) for signal, sender in _ON_ADVANCE):
            return  # nothing listens: this runs on every step, so do no more
        run_id, workflow = claim.run_id, claim.workflow_name
        for event in activation.events:
            payload = event.payload or {}
            if event.type in (EventType.ACTIVITY_SCHEDULED, EventType.COMPENSATION_SCHEDULED):
                kind = "activity" if event.type == EventType.ACTIVITY_SCHEDULED else "compensation"
                _send(
                    activity_scheduled, ActivityTask, run_id=run_id,
                    command_id=event.command_id, activity=payload.get("activity"), kind=kind,
                )  # fmt: skip
            elif event.type == EventType.TIMER_SCHEDULED:
                fire_at = dt.datetime.fromisoformat(payload["fire_at"])
                _send(
                    timer_scheduled, Timer, run_id=run_id, command_id=event.command_id,
                    fire_at=fire_at,
                )  # fmt: skip
            elif event.type == EventType.SIGNAL_RECEIVED:
                _send(signal_received, MailboxSignal, run_id=run_id, name=payload.get("name"))
        types = [str(event.type) for event in activation.events]
        _send(
            run_advanced, WorkflowRun, run_id=run_id, workflow=workflow,
            outcome=activation.outcome, events=types,
        )  # fmt: skip
        if activation.outcome != Outcome.SUSPENDED and activation.outcome in RunStatus.TERMINAL:
            _send(
                run_ended, WorkflowRun, run_id=run_id, workflow=workflow,
                status=activation.outcome, error=activation.error,
            )  # fmt: skip

    def parked(self, run_id: str, reason: str, detail: str) -> None:
        _send(run_parked, WorkflowRun, run_id=run_id, reason=reason, detail=detail)

    def attempted(
        self, claim: ActivityClaim, outcome: str, error: dict[str, Any] | None, seconds: float
    ) -> None:
        _send(
            activity_attempted, ActivityTask, run_id=claim.run_id, task_id=claim.task_id,
            activity=claim.activity, attempt=claim.attempt, outcome=outcome, error=error,
            seconds=seconds,
        )  # fmt: skip

    def swept(self, counts: dict[str, int], seconds: float) -> None:
        _send(sweep_finished, WorkflowRun, counts=counts, seconds=seconds)


# The signals `SignalObserver.advanced` may send.
_ON_ADVANCE = (
    (activity_scheduled, ActivityTask),
    (timer_scheduled, Timer),
    (signal_received, MailboxSignal),
    (run_advanced, WorkflowRun),
    (run_ended, WorkflowRun),
)
