"""The health report's values and its verdict: what makes the journal ``degraded``."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from django.utils import timezone

# What a live run waits for, coarsely (the admin's "waiting for" column, `wait_reason`, says
# it per run in detail); `probe.wait_kind` checks them in this order, the first that holds wins.
WAITS = {
    "parked": "an operator (parked)",
    "slot": "a start slot (flow control)",
    "start": "a worker to start it",
    "replay": "a replay under way",
    "activity": "an activity",
    "signal": "a signal, with a timeout",
    "timer": "a timer",
    "child": "a child run",
    "event": "a signal or another event",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """Seconds after which something counts as stuck (see docs/guides/operations.md)."""

    overdue_after: float = 60.0  # a wake-up, timer or lease past due by this much
    stuck_after: float = 300.0  # work owed but nothing written for this long
    sweep_after: float = 60.0  # the sweep silent for this long
    worker_after: float = 60.0  # no worker beat for this long (while runs are live)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"health threshold {name} must be a positive number of seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """How many rows are in one stuck state, the oldest moment among them, a few runs."""

    count: int
    oldest: dt.datetime | None
    samples: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class FailingActivity:
    task_id: int
    run_id: str
    activity: str
    status: str  # "running": attempt k under way; "scheduled": attempt k failed, retry due
    attempt: int
    max_attempts: int
    next_attempt_at: dt.datetime
    error_type: str
    error_message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    last_run_at: dt.datetime | None
    last_counts: dict[str, int]
    last_worker: str
    runs_total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Workers:
    last_seen: dt.datetime | None  # the latest version-registry beat of any worker
    recent: list[str]  # workers whose beat is the latest on some version (newest first)
    inspected: list[str] | None  # workers that answered --inspect-workers (None: not asked)


@dataclass(frozen=True, slots=True, kw_only=True)
class Queues:
    needed: list[str]  # the default queue and the queues of open activity tasks
    without_consumer: list[str] | None  # None: unknown (workers not inspected, or no broker)
    broker_error: str = ""  # why the workers could not be asked, when they could not


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    status: Literal["ok", "degraded"]
    reasons: list[str]
    checked_at: dt.datetime
    thresholds: Thresholds
    live_runs: int
    oldest_live_run_at: dt.datetime | None
    runs_by_status: dict[str, int]
    runs_by_wait: dict[str, int]
    parked_by_reason: dict[str, int]
    overdue_runs: Problem
    stalled_runs: Problem
    expired_run_leases: Problem
    overdue_timers: Problem
    expired_task_leases: Problem
    waiting_activities: Problem
    failing_activities: Problem
    failing: list[FailingActivity]  # the most recently failed, up to FAILING_SHOWN
    sweep: Sweep
    workers: Workers
    queues: Queues
    # Open activity tasks held back by flow control, by state ("slot": waiting for a
    # concurrency slot, "rate": booked for a later start, "granted": a slot on its way).
    # Waiting is their normal course, not a problem.
    throttled_activities: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- what makes it degraded ----------------------------------------------------------------


def when(moment: dt.datetime | None) -> str:
    """A moment to the second, in the current time zone, with the zone's name."""
    if moment is None:
        return "never"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")


PROBLEMS = {
    "overdue_runs": "{n} run(s) owed an advance for over {overdue}s, unleased (oldest due {at})",
    "stalled_runs": "{n} run(s) owed work but unchanged for over {stuck}s (oldest since {at})",
    "expired_run_leases": "{n} run lease(s) expired over {overdue}s ago (oldest {at})",
    "overdue_timers": "{n} timer(s) due over {overdue}s ago and not fired (oldest due {at})",
    "expired_task_leases": "{n} activity lease(s) expired over {overdue}s ago (oldest {at})",
    "waiting_activities": "{n} activity task(s) due but untouched for over {stuck}s "
    "(oldest since {at}): is a worker consuming their queue?",
}


def reasons(report: HealthReport) -> list[str]:
    limits = report.thresholds
    numbers = {"overdue": f"{limits.overdue_after:g}", "stuck": f"{limits.stuck_after:g}"}
    reasons = []
    for name, text in PROBLEMS.items():
        problem: Problem = getattr(report, name)
        if problem.count:
            reasons.append(text.format(n=problem.count, at=when(problem.oldest), **numbers))
    if report.parked_by_reason:
        how = ", ".join(f"{reason} {n}" for reason, n in sorted(report.parked_by_reason.items()))
        total = sum(report.parked_by_reason.values())
        reasons.append(f"{total} run(s) parked ({how}): an operator must retry or release them")
    if report.failing:
        first = report.failing[0]
        reasons.append(
            f"{report.failing_activities.count} activity task(s) failing and retrying; latest: "
            f"{first.activity} attempt {first.attempt} of {first.max_attempts}: "
            f"{first.error_type}: {first.error_message[:200]}"
        )
    sweep_at = report.sweep.last_run_at
    if sweep_at is None and report.live_runs:
        reasons.append(
            f"the sweep has never run while {report.live_runs} run(s) are live: "
            "is Celery beat running?"
        )
    elif sweep_at is not None and sweep_at < _ago(report, limits.sweep_after):
        reasons.append(
            f"the sweep last ran at {when(sweep_at)}, over {limits.sweep_after:g}s ago: "
            "is Celery beat running?"
        )
    seen = report.workers.last_seen
    if report.live_runs and (seen is None or seen < _ago(report, limits.worker_after)):
        reasons.append(
            f"no worker seen for over {limits.worker_after:g}s (last beat {when(seen)}) "
            f"while {report.live_runs} run(s) are live"
        )
    if report.queues.broker_error:
        reasons.append(
            f"could not ask the workers through the broker: {report.queues.broker_error}"
        )
    if report.queues.without_consumer:
        reasons.append(f"queue(s) with no consumer: {', '.join(report.queues.without_consumer)}")
    return reasons


def _ago(report: HealthReport, seconds: float) -> dt.datetime:
    return report.checked_at - dt.timedelta(seconds=seconds)
