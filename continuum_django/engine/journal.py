"""The `Journal` protocol: every durable read and write the engine makes, and the values they carry.

Two implementations keep to it: `memory.MemoryJournal` and the Django ORM journal
(`continuum_django.journal.OrmJournal`); one contract test suite runs against both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .context import BufferedSignal
from .events import Event, EventType, NewEvent
from .exceptions import TIMED_OUT, LeaseLost
from .replay import Activation
from .retry import RetryPolicy


class StaleClaim(Exception):
    """The run changed since the claim loaded it; reload and run the activation again."""


class ParkReason:
    DRIFT = "drift"
    UNKNOWN_VERSION = "unknown_version"
    ERROR = "error"  # advances kept failing with an unexpected error (quarantine)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunClaim:
    """A run leased to one worker, with what an activation needs.

    An ``optimistic`` claim holds no lease: it is the run as read at ``revision``, and a
    write on it goes through only if the run is still at that revision and nobody holds
    its lease (`StaleClaim` otherwise, and nothing is written).
    """

    run_id: str
    token: int
    revision: int
    parent_run_id: str | None
    workflow_name: str
    version: int
    history: list[Event]
    mailbox: list[BufferedSignal]
    now: dt.datetime
    optimistic: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Speculation:
    """The advance an activity's result leads to, replayed before that result is written:
    ``claim`` is the run as its last activation left it plus the result's event. A journal
    writes the result and ``activation`` in one transaction if the run has not changed
    since; otherwise it writes the result alone and the run advances the usual way."""

    claim: RunClaim
    activation: Activation
    eager: Eager | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityClaim:
    """An activity attempt leased to one worker."""

    task_id: int
    run_id: str
    command_id: str
    activity: str
    args: Any
    kwargs: Any
    attempt: int
    token: int
    retry: RetryPolicy
    timeout_reason: str = ""
    kind: str = "activity"
    # The task's concurrency key when it has flow-control limits (None: it has none).
    flow_key: str | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.command_id}"

    @classmethod
    def of(cls, task: Any, reason: str = "") -> ActivityClaim:
        """The claim on a task row (either journal's) as it stands, leased or expired."""
        return cls(
            task_id=task.id,
            run_id=str(task.run_id),
            command_id=task.command_id,
            activity=task.activity,
            args=task.args,
            kwargs=task.kwargs,
            attempt=task.attempt,
            token=task.lease_token,
            retry=RetryPolicy.from_json(task.retry),
            timeout_reason=reason,
            kind=task.kind,
            flow_key=task.flow_key if getattr(task, "flow", None) else None,
        )


@dataclass(frozen=True, slots=True)
class Throttled:
    """A claim refused because the task is over a flow-control limit: it waits in the
    journal, and ``dispatch`` holds the message that wakes it (if any: a task waiting for a
    concurrency slot is woken when one frees)."""

    reason: str
    dispatch: Dispatch


@dataclass(slots=True)
class Dispatch:
    """Celery messages to send once the transaction that made them needed has committed."""

    runs: list[tuple[str, dt.datetime | None]] = field(default_factory=list)
    activities: list[tuple[int, str, dt.datetime | None]] = field(default_factory=list)
    # Work already leased to the writer, to do at once in the same process (no message).
    eager_activity: ActivityClaim | None = None
    eager_run: RunClaim | None = None
    # Events the write appended (a journal may reuse them when it leases the run at once).
    appended: list[Event] = field(default_factory=list)
    # The outcome of the activation a `Speculation` wrote (None: it was not written).
    advanced: str | None = None
    # The run as an activation that suspended it left it, for speculating its next step.
    basis: RunClaim | None = None
    # New runs' ``run_started`` payloads, by run id: their first advance message carries it,
    # so that the advance need not read the run (see `Runtime.advance_run`).
    starts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Runs `Journal.time_out_runs` ended at their deadline.
    timed_out: list[str] = field(default_factory=list)

    def merge(self, other: Dispatch) -> Dispatch:
        self.runs.extend(other.runs)
        self.activities.extend(other.activities)
        self.starts.update(other.starts)
        return self

    def __bool__(self) -> bool:
        return bool(self.runs or self.activities)


@dataclass(frozen=True, slots=True, kw_only=True)
class Eager:
    """Ask a write to lease the work it makes next to ``owner`` instead of sending a message:
    the first activity task on ``queue`` an activation schedules, or the run an activity
    completion wakes. It saves a claim transaction and a broker round trip per step."""

    owner: str
    queue: str
    lease_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    """What `Journal.create_run` inserts, together with the run's first event."""

    run_id: str
    workflow_name: str
    version: int
    version_hash: str
    input: dict[str, Any]
    namespace: str
    attributes: dict[str, Any]
    idempotency_key: str | None
    seed: int
    depth: int = 0
    parent_run_id: str | None = None
    parent_command_id: str = ""
    continued_from_id: str | None = None
    chain_root_id: str | None = None
    # The trace context the run was started in (OpenTelemetry's carrier), when traced.
    trace: dict[str, str] | None = None
    # Published state carried over from the run this one continues (codec form).
    state: dict[str, Any] = field(default_factory=dict)
    # The run's deadline: ``timeout`` seconds after it is inserted (on the journal's
    # clock), or the ``deadline`` a continued run hands its successor.
    timeout: float | None = None
    deadline: dt.datetime | None = None
    # The run's start limits, evaluated (`FlowControl.start_payload`): it is admitted only
    # while fewer than ``concurrency`` runs of its workflow and ``key`` are live.
    flow: dict[str, Any] | None = None

    def started_payload(self) -> dict[str, Any]:
        """The payload of the run's ``run_started`` event."""
        payload = {
            "workflow": self.workflow_name,
            "version": self.version,
            "version_hash": self.version_hash,
            "input": self.input,
            "seed": self.seed,
            "namespace": self.namespace,
            "attributes": self.attributes,
            "depth": self.depth,
            "parent_run_id": self.parent_run_id,
            "continued_from": self.continued_from_id,
        }
        if self.trace:
            payload["trace"] = self.trace
        if self.state:  # replay starts the run's published state from it
            payload["state"] = self.state
        if self.timeout is not None:
            payload["timeout"] = self.timeout
        if self.deadline is not None:
            payload["deadline"] = self.deadline.isoformat()
        if self.flow is not None:
            payload["flow"] = self.flow
        return payload

    def deadline_at(self, now: dt.datetime) -> dt.datetime | None:
        """The run's deadline if it is inserted at ``now`` (None: it has none)."""
        if self.deadline is not None:
            return self.deadline
        return seconds_after(now, self.timeout)


def child_run(parent_id: str, event: Event) -> NewRun:
    """The run a ``child_started`` event of ``parent_id`` asks for."""
    p = event.payload
    return NewRun(
        run_id=p["run_id"],
        workflow_name=p["workflow"],
        version=p["version"],
        version_hash=p["version_hash"],
        input=p["input"],
        namespace=p["namespace"],
        attributes={},
        idempotency_key=None,
        seed=p["seed"],
        depth=p["depth"],
        parent_run_id=parent_id,
        parent_command_id=event.command_id,
        chain_root_id=p["run_id"],
        timeout=p.get("timeout"),
        flow=p.get("flow"),
    )


def successor_run(
    event: Event,
    *,
    run_id: str,
    namespace: str,
    attributes: dict[str, Any],
    depth: int,
    parent_run_id: str | None,
    parent_command_id: str,
    chain_root_id: str,
    state: dict[str, Any] | None = None,
    deadline: dt.datetime | None = None,
    flow: dict[str, Any] | None = None,
) -> NewRun:
    """The run a ``run_continued`` event asks for: same chain, same parent, fresh history,
    the published ``state`` carried over and the same deadline (a deadline bounds the
    whole chain), and its predecessor's start limits (``flow``: it takes over its slot)."""
    p = event.payload
    return NewRun(
        run_id=p["next_run_id"],
        workflow_name=p["workflow"],
        version=p["version"],
        version_hash=p["version_hash"],
        input=p["input"],
        namespace=namespace,
        attributes=attributes,
        idempotency_key=None,
        seed=p["seed"],
        depth=depth,
        parent_run_id=parent_run_id,
        parent_command_id=parent_command_id,
        continued_from_id=run_id,
        chain_root_id=chain_root_id,
        state=dict(state or {}),
        deadline=deadline,
        flow=flow,
    )


def timed_out_events(deadline: dt.datetime) -> list[NewEvent]:
    """What ends a run at its ``deadline``: ``run_timed_out``, then ``run_failed`` with a
    `WorkflowTimedOut` error (the run's error too; `run_failure` raises it)."""
    when = deadline.isoformat()
    error = {
        "type": TIMED_OUT,
        "message": f"the run did not finish by its deadline, {when}",
        "non_retryable": True,
        "traceback": "",
        "deadline": when,
    }
    return [
        NewEvent(type=EventType.RUN_TIMED_OUT, payload={"deadline": when, "error": error}),
        NewEvent(type=EventType.RUN_FAILED, payload={"error": error}),
    ]


def quarantine_detail(error: dict[str, Any], count: int, revision: int) -> str:
    """The park detail of a run parked after ``count`` failures in a row."""
    return (
        f"{count} advances in a row failed at revision {revision} with an unexpected error; "
        f"the last: {error.get('type')}: {error.get('message')}\n{error.get('traceback', '')}"
    ).rstrip()


def child_outcome(run_id: str, status: str, result: Any, error: Any) -> tuple[str, dict[str, Any]]:
    """The event type and payload that tell a parent how its child ended."""
    if status == RunStatus.COMPLETED:
        return EventType.CHILD_COMPLETED, {"run_id": run_id, "result": result}
    if status == RunStatus.FAILED:
        return EventType.CHILD_FAILED, {"run_id": run_id, "error": error}
    return EventType.CHILD_CANCELLED, {"run_id": run_id}


# ``(workflow name, version)`` pairs; a version of None stands for every version of the name.
VersionKeys = Collection[tuple[str, int | None]]


def on_versions(name: str, version: int, keys: VersionKeys | None) -> bool:
    """Whether a run of ``name`` at ``version`` is one of ``keys`` (None: any run)."""
    return keys is None or any(k == name and v in (None, version) for k, v in keys)


class Journal(Protocol):
    """Durable state of runs. Every write locks the run, checks the writer's lease, then writes."""

    def create_run(self, new: NewRun) -> tuple[str, bool, Dispatch]:
        """Insert the run and its run_started event; with an idempotency key already used,
        return the existing run's id and ``False``."""
        ...

    def claim_run(self, run_id: str, owner: str, lease_seconds: float) -> RunClaim | None:
        """Lease a runnable run (firing its due timers first); None when it is not claimable."""
        ...

    def snapshot_run(self, run_id: str) -> RunClaim | None:
        """The run as it stands, as an optimistic claim (no lease, nothing written), when it
        is runnable now; None otherwise, or when the journal offers no such claims."""
        ...

    def refresh_claim(self, claim: RunClaim, lease_seconds: float) -> RunClaim:
        """Reload history and mailbox under the same lease (raises `LeaseLost`)."""
        ...

    def commit_activation(
        self, claim: RunClaim, activation: Activation, eager: Eager | None = None
    ) -> Dispatch:
        """Append the activation's events, schedule its commands, suspend or end the run, and
        release the lease. Raises `LeaseLost`, or `StaleClaim` when the run changed meanwhile."""
        ...

    def park_run(self, claim: RunClaim, reason: str, detail: str) -> None:
        """Leave the run suspended with a park reason, and release the lease."""
        ...

    def record_failure(self, run_id: str, error: Exception, limit: int) -> bool:
        """Count an unexpected error of an advance or completion of a live, unparked run:
        the count restarts whenever the run's revision moved since the last one (it made
        progress). At ``limit`` the run is parked as `ParkReason.ERROR` with the error and
        its traceback, its lease released. Returns whether it parked the run. Errors that
        say the database itself is unreachable are not counted."""
        ...

    def release_parked(self, keys: VersionKeys | None, note: str) -> Dispatch:
        """Unpark the live runs parked as ``unknown_version`` on one of ``keys`` (every one
        when None): clear the reason, record ``note`` in the detail, and wake them. Runs
        another releaser holds locked are left to it."""
        ...

    def claim_activity(
        self, task_id: int, owner: str, lease_seconds: float
    ) -> ActivityClaim | Throttled | None:
        """Lease the task's next attempt; `Throttled` when a flow-control limit makes it
        wait (a journal without flow control never returns it); None when not claimable."""
        ...

    def renew_activity(
        self,
        claim: ActivityClaim,
        lease_seconds: float,
        details: Any = None,
        heartbeat: bool = False,
    ) -> bool:
        """Extend the attempt's lease (recording heartbeat details); returns whether the run
        asked to cancel. Raises `LeaseLost`."""
        ...

    def finish_activity(
        self,
        claim: ActivityClaim,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        retry_delay: float | None = None,
        eager: Eager | None = None,
        then: Speculation | None = None,
    ) -> Dispatch:
        """Record an attempt's end under its lease: completed, retry later, or failed for good.

        With ``then``, also write its activation in the same transaction when the run is
        unchanged (`Dispatch.advanced` tells; a journal may always decline)."""
        ...

    def finish_in_transaction(
        self,
        claim: ActivityClaim,
        body: Callable[[], Any],
        *,
        using: str | None = None,
        eager: Eager | None = None,
    ) -> Dispatch | None:
        """Run a transactional activity's ``body`` (it returns the encoded result) inside
        the transaction that records its completion, once the attempt is found to hold its
        lease under the lock: both commit, or neither. What ``body`` raises rolls it back
        and propagates (the caller records the failure with `finish_activity`); a
        serialization failure or deadlock retries the whole transaction a few times.
        Returns None, the body not run, when the run has already ended (the task is then
        cancelled). Raises `LeaseLost`, and `TransactionalActivityError` when ``using``
        names another database than the journal's."""
        ...

    def expired_activities(self, limit: int) -> list[ActivityClaim]:
        """Attempts whose lease or timeouts have passed (on the journal's clock)."""
        ...

    def time_out_activity(self, claim: ActivityClaim, retry_delay: float | None) -> Dispatch:
        """Fail an expired attempt, fencing off its worker; re-checks expiry under lock."""
        ...

    def fire_due_timers(self, limit: int) -> Dispatch: ...

    def due_activities(self, limit: int, grace_seconds: float) -> Dispatch:
        """Ready activity tasks whose message seems lost (ready for over ``grace_seconds``)."""
        ...

    def due_runs(self, limit: int, grace_seconds: float) -> Dispatch:
        """Runs whose wake-up is overdue by ``grace_seconds`` and whose lease is free."""
        ...

    def time_out_runs(self, limit: int) -> Dispatch:
        """End live runs past their deadline (see `timed_out_events`), each exactly once
        (under its row lock, after re-checking): their open work is closed, their live
        children are terminated and their parent hears the failure. The workflow code
        gets no cleanup: a deadline is a hard limit."""
        ...

    def deliver_signal(
        self, run_id: str, name: str, payload: Any, dedupe_key: str | None
    ) -> Dispatch: ...

    def signal_with_start(
        self, new: NewRun, name: str, payload: Any, dedupe_key: str | None
    ) -> tuple[str, bool, Dispatch]:
        """`create_run` and `deliver_signal` to that run (or the one holding the key) as one
        atomic write: concurrent callers with one key make one run and every signal lands.
        Raises `RunNotActive` (and writes nothing) when the run holding the key has ended."""
        ...

    def request_cancel(self, run_id: str, reason: str, terminate: bool) -> Dispatch: ...

    def history(self, run_id: str) -> list[Event]: ...

    def on_thread_exit(self) -> None:
        """Release per-thread resources (database connections) of a helper thread."""
        ...


class RunStatus:
    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CONTINUED = "continued"
    TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, CONTINUED})
    # Ends that the parent of a run hears about (a continued run lives on in its successor).
    FINAL = frozenset({COMPLETED, FAILED, CANCELLED})


class TaskStatus:
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead_lettered"  # failed, and an operator said not to retry it
    OPEN = frozenset({SCHEDULED, RUNNING})


# Timers due within this many seconds are also sent as Celery ETA messages.
ETA_HORIZON_SECONDS = 300.0

TIMEOUT_MESSAGES = {
    "lease": "the worker running attempt {attempt} stopped renewing its lease (crashed or lost)",
    "start_to_close": "attempt {attempt} exceeded its start-to-close timeout",
    "heartbeat": "attempt {attempt} sent no heartbeat within its heartbeat timeout",
    "schedule_to_close": "the activity exceeded its schedule-to-close timeout",
}


def timeout_error(reason: str, attempt: int) -> dict[str, Any]:
    """The journal form of an attempt that timed out."""
    return {
        "type": "continuum.ActivityTimeout",
        "message": TIMEOUT_MESSAGES[reason].format(attempt=attempt),
        "non_retryable": reason == "schedule_to_close",
        "traceback": "",
    }


def task_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """Activity task columns from an ``activity_scheduled`` payload."""
    return {
        "activity": payload["activity"],
        "args": payload["args"],
        "kwargs": payload["kwargs"],
        "queue": payload["queue"],
        "retry": payload["retry"],
        "timeout": payload.get("timeout"),
        "schedule_to_close_timeout": payload.get("schedule_to_close_timeout"),
        "heartbeat_timeout": payload.get("heartbeat_timeout"),
    }


def flow_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """Flow-control columns of an activity task from an ``activity_scheduled`` payload."""
    flow = payload.get("flow")
    if not flow:
        return {}
    fields: dict[str, Any] = {"priority": flow.get("priority", 0)}
    if flow.get("concurrency") is not None or flow.get("rate") is not None:
        fields["flow"] = {"concurrency": flow.get("concurrency"), "rate": flow.get("rate")}
        fields["flow_key"] = flow.get("key", "")
    return fields


def seconds_after(moment: dt.datetime, seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else moment + dt.timedelta(seconds=seconds)


def lease_task(task: Any, owner: str, lease_seconds: float, now: dt.datetime) -> None:
    """Start the task's next attempt (either journal's row) under a fresh lease."""
    task.status = TaskStatus.RUNNING
    task.attempt += 1
    task.lease_token += 1
    task.lease_owner = owner
    task.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
    task.attempt_deadline = seconds_after(now, task.timeout)
    task.heartbeat_deadline = seconds_after(now, task.heartbeat_timeout)


def task_kind(event_type: str) -> str:
    """``activity`` or ``compensation``, from the event that scheduled the task."""
    return "compensation" if event_type == EventType.COMPENSATION_SCHEDULED else "activity"


def outcome_type(kind: str, *, failed: bool) -> str:
    """The event that journals how a task of ``kind`` ended."""
    if kind == "compensation":
        return EventType.COMPENSATION_FAILED if failed else EventType.COMPENSATION_COMPLETED
    return EventType.ACTIVITY_FAILED if failed else EventType.ACTIVITY_COMPLETED


class TaskState(Protocol):
    """The columns of an activity task that decide whether its attempt still holds the lease."""

    status: str
    lease_token: int
    lease_expires_at: dt.datetime | None
    attempt_deadline: dt.datetime | None
    heartbeat_deadline: dt.datetime | None
    schedule_deadline: dt.datetime | None


T = TypeVar("T", bound=TaskState)


def check_attempt(task: T | None, claim: ActivityClaim, now: dt.datetime) -> T:
    """``task``, or `LeaseLost` unless ``claim``'s attempt still holds its lease at ``now``."""
    if (
        task is None
        or task.status != TaskStatus.RUNNING
        or task.lease_token != claim.token
        or task.lease_expires_at is None
        or task.lease_expires_at <= now
        or (task.attempt_deadline is not None and task.attempt_deadline <= now)
    ):
        raise attempt_lost(claim)
    return task


def attempt_lost(claim: ActivityClaim) -> LeaseLost:
    """The error for an attempt whose outcome came after it lost its lease."""
    return LeaseLost(
        f"attempt {claim.attempt} of activity task {claim.task_id} no longer holds its lease",
        task_id=claim.task_id,
    )


def expiry_reason(task: TaskState, now: dt.datetime) -> str:
    """Why the task's attempt (or the task) has run out of time at ``now``, or ``""``."""
    if task.schedule_deadline is not None and task.schedule_deadline <= now:
        return "schedule_to_close"
    if task.status != TaskStatus.RUNNING:
        return ""
    if task.attempt_deadline is not None and task.attempt_deadline <= now:
        return "start_to_close"
    if task.heartbeat_deadline is not None and task.heartbeat_deadline <= now:
        return "heartbeat"
    if task.lease_expires_at is not None and task.lease_expires_at <= now:
        return "lease"
    return ""
