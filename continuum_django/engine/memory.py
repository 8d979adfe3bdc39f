"""An in-memory `Journal`: the same rules as the ORM journal, held in dicts under one lock."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock, SystemClock
from .context import BufferedSignal
from .events import Event, EventType, NewEvent
from .exceptions import LeaseLost, RunNotActive, RunNotFound, mailbox_full
from .journal import (
    ETA_HORIZON_SECONDS,
    ActivityClaim,
    Dispatch,
    Eager,
    NewRun,
    ParkReason,
    RunClaim,
    RunStatus,
    Speculation,
    StaleClaim,
    TaskStatus,
    VersionKeys,
    check_attempt,
    child_outcome,
    child_run,
    expiry_reason,
    lease_task,
    on_versions,
    outcome_type,
    quarantine_detail,
    seconds_after,
    successor_run,
    task_fields,
    task_kind,
    timed_out_events,
    timeout_error,
)
from .replay import Activation, Outcome
from .retry import error_payload


@dataclass
class MemoryRun:
    id: str
    workflow_name: str
    version: int
    version_hash: str
    namespace: str
    input: dict[str, Any]
    attributes: dict[str, Any]
    idempotency_key: str | None
    status: str = RunStatus.PENDING
    result: Any = None
    error: Any = None
    lease_owner: str = ""
    lease_token: int = 0
    lease_expires_at: dt.datetime | None = None
    next_wakeup_at: dt.datetime | None = None
    park_reason: str = ""
    park_detail: str = ""
    cancel_requested: bool = False
    last_seq: int = 0
    revision: int = 0
    failure_count: int = 0
    failure_revision: int = 0
    depth: int = 0
    parent_run_id: str | None = None
    parent_command_id: str = ""
    chain_root_id: str = ""
    successor_id: str | None = None
    deadline: dt.datetime | None = None
    events: list[Event] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class MemoryTask:
    id: int
    run_id: str
    command_id: str
    activity: str
    args: Any
    kwargs: Any
    queue: str
    retry: dict[str, Any]
    timeout: float | None
    schedule_to_close_timeout: float | None
    heartbeat_timeout: float | None
    next_attempt_at: dt.datetime
    kind: str
    schedule_deadline: dt.datetime | None
    status: str = TaskStatus.SCHEDULED
    attempt: int = 0
    lease_owner: str = ""
    lease_token: int = 0
    lease_expires_at: dt.datetime | None = None
    attempt_deadline: dt.datetime | None = None
    heartbeat_deadline: dt.datetime | None = None
    heartbeat_details: Any = None
    cancel_requested: bool = False
    result: Any = None
    error: Any = None


@dataclass
class MemoryTimer:
    id: int
    run_id: str
    command_id: str
    fire_at: dt.datetime
    fired: bool = False
    cancelled: bool = False


@dataclass
class MemorySignal:
    id: int
    run_id: str
    name: str
    payload: Any
    dedupe_key: str | None
    consumed_seq: int | None = None


class MemoryJournal:
    """A journal for tests and the testing kit; ``clock`` decides every time comparison."""

    def __init__(self, clock: Clock | None = None, max_unread_signals: int | None = 1000) -> None:
        self.clock = clock or SystemClock()
        self._max_unread_signals = max_unread_signals  # as CONTINUUM["MAX_UNREAD_SIGNALS"]
        self.runs: dict[str, MemoryRun] = {}
        self.tasks: dict[int, MemoryTask] = {}
        self.timers: dict[int, MemoryTimer] = {}
        self.signals: dict[int, MemorySignal] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- helpers -------------------------------------------------------------

    def _run(self, run_id: str) -> MemoryRun:
        run = self.runs.get(str(run_id))
        if run is None:
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        return run

    def _append(self, run: MemoryRun, new: NewEvent, now: dt.datetime) -> Event:
        run.last_seq += 1
        event = Event(
            seq=run.last_seq,
            type=new.type,
            command_id=new.command_id,
            payload=new.payload,
            created_at=now,
        )
        run.events.append(event)
        return event

    def _wake(self, run: MemoryRun, now: dt.datetime, dispatch: Dispatch) -> None:
        run.revision += 1
        if run.next_wakeup_at is None or run.next_wakeup_at > now:
            run.next_wakeup_at = now
        dispatch.runs.append((run.id, None))

    def _close_open_work(self, run: MemoryRun) -> None:
        for task in self.tasks.values():
            if task.run_id == run.id and task.status == TaskStatus.SCHEDULED:
                task.status = TaskStatus.CANCELLED
            elif task.run_id == run.id and task.status == TaskStatus.RUNNING:
                task.cancel_requested = True
        for timer in self.timers.values():
            if timer.run_id == run.id and not timer.fired:
                timer.cancelled = True

    def _check_lease(self, run: MemoryRun, claim: RunClaim, now: dt.datetime) -> None:
        if (
            run.lease_token != claim.token
            or run.lease_expires_at is None
            or run.lease_expires_at <= now
        ):
            raise LeaseLost(f"lease {claim.token} on run {run.id} is no longer held", run_id=run.id)

    def _fire(self, timer: MemoryTimer, now: dt.datetime, dispatch: Dispatch) -> None:
        run = self.runs[timer.run_id]
        if (
            run.status not in RunStatus.TERMINAL
            and run.deadline is not None
            and run.deadline <= now
        ):
            return  # `time_out_runs` ends it and cancels its timers
        timer.fired = True
        if run.status in RunStatus.TERMINAL:
            return
        self._append(run, NewEvent(type=EventType.TIMER_FIRED, command_id=timer.command_id), now)
        self._wake(run, now, dispatch)

    def _insert(self, new: NewRun, now: dt.datetime, dispatch: Dispatch) -> MemoryRun:
        run = MemoryRun(
            id=new.run_id,
            workflow_name=new.workflow_name,
            version=new.version,
            version_hash=new.version_hash,
            namespace=new.namespace,
            input=new.input,
            attributes=new.attributes,
            idempotency_key=new.idempotency_key,
            next_wakeup_at=now,
            revision=1,
            depth=new.depth,
            parent_run_id=new.parent_run_id,
            parent_command_id=new.parent_command_id,
            chain_root_id=new.chain_root_id or new.run_id,
            state=dict(new.state),
            deadline=new.deadline_at(now),
        )
        self.runs[run.id] = run
        self._append(run, NewEvent(type=EventType.RUN_STARTED, payload=new.started_payload()), now)
        dispatch.runs.append((run.id, None))
        return run

    def _tip(self, run_id: str) -> MemoryRun:
        """The live end of the run's continue_as_new chain (the run itself when none)."""
        run = self._run(run_id)
        while run.successor_id is not None:
            run = self.runs[run.successor_id]
        return run

    def _finish(self, run: MemoryRun, now: dt.datetime, dispatch: Dispatch) -> None:
        """A run reached a final status: tell its parent, cancel its live children."""
        self._close_open_work(run)
        if run.parent_run_id is not None:
            parent = self.runs[run.parent_run_id]
            if parent.status not in RunStatus.TERMINAL:
                kind, payload = child_outcome(run.id, run.status, run.result, run.error)
                new = NewEvent(type=kind, command_id=run.parent_command_id, payload=payload)
                self._append(parent, new, now)
                self._wake(parent, now, dispatch)
        for child in self._children(run):
            self._cancel(child, "parent run ended", False, now, dispatch)

    def _children(self, run: MemoryRun) -> list[MemoryRun]:
        return [
            r
            for r in self.runs.values()
            if r.parent_run_id == run.id and r.status not in RunStatus.TERMINAL
        ]

    def _cancel(
        self, run: MemoryRun, reason: str, terminate: bool, now: dt.datetime, dispatch: Dispatch
    ) -> None:
        """Journal a cancel request (once) on ``run`` and its live descendants."""
        if not run.cancel_requested:
            run.cancel_requested = True
            self._append(
                run, NewEvent(type=EventType.CANCEL_REQUESTED, payload={"reason": reason}), now
            )
            self._close_open_work(run)
            self._wake(run, now, dispatch)
        for child in self._children(run):
            self._cancel(child, reason, terminate, now, dispatch)
        if terminate and run.status not in RunStatus.TERMINAL:
            self._append(
                run,
                NewEvent(
                    type=EventType.RUN_CANCELLED, payload={"reason": reason, "terminated": True}
                ),
                now,
            )
            run.status = RunStatus.CANCELLED
            run.lease_owner = ""
            run.lease_expires_at = None
            run.next_wakeup_at = None
            run.revision += 1
            self._finish(run, now, dispatch)

    def _snapshot(self, run: MemoryRun, now: dt.datetime) -> RunClaim:
        mailbox = [
            BufferedSignal(id=s.id, name=s.name, payload=s.payload)
            for s in self.signals.values()
            if s.run_id == run.id and s.consumed_seq is None
        ]
        return RunClaim(
            run_id=run.id,
            token=run.lease_token,
            revision=run.revision,
            parent_run_id=run.parent_run_id,
            workflow_name=run.workflow_name,
            version=run.version,
            history=list(run.events),
            mailbox=mailbox,
            now=now,
        )

    def _activity_claim(self, task: MemoryTask, reason: str = "") -> ActivityClaim:
        return ActivityClaim.of(task, reason)

    def _keyed(self, new: NewRun) -> MemoryRun | None:
        """The run already started under ``new``'s idempotency key, if any."""
        if new.idempotency_key is None:
            return None
        key = (new.namespace, new.workflow_name, new.idempotency_key)
        for run in self.runs.values():
            if (run.namespace, run.workflow_name, run.idempotency_key) == key:
                return run
        return None

    def create_run(self, new: NewRun) -> tuple[str, bool, Dispatch]:
        with self._lock:
            existing = self._keyed(new)
            if existing is not None:
                return existing.id, False, Dispatch()
            dispatch = Dispatch()
            run = self._insert(new, self.clock.now(), dispatch)
            return run.id, True, dispatch

    def snapshot_run(self, run_id: str) -> None:
        """No optimistic claims: runs advance under a lease (see `Journal.snapshot_run`)."""
        return None

    def claim_run(self, run_id: str, owner: str, lease_seconds: float) -> RunClaim | None:
        with self._lock:
            run = self.runs.get(str(run_id))
            now = self.clock.now()
            if run is None or run.status in RunStatus.TERMINAL or run.park_reason:
                return None
            if run.lease_expires_at is not None and run.lease_expires_at > now:
                return None
            if run.deadline is not None and run.deadline <= now:
                return None  # past its deadline: `time_out_runs` ends it
            dispatch = Dispatch()
            for timer in list(self.timers.values()):
                if (
                    timer.run_id == run.id
                    and not (timer.fired or timer.cancelled)
                    and (timer.fire_at <= now)
                ):
                    self._fire(timer, now, dispatch)
            if run.next_wakeup_at is None or run.next_wakeup_at > now:
                return None
            return self._lease_run(run, owner, lease_seconds, now)

    def _lease_run(
        self, run: MemoryRun, owner: str, lease_seconds: float, now: dt.datetime
    ) -> RunClaim:
        run.lease_token += 1
        run.lease_owner = owner
        run.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
        run.status = RunStatus.RUNNING
        return self._snapshot(run, now)

    def refresh_claim(self, claim: RunClaim, lease_seconds: float) -> RunClaim:
        with self._lock:
            run = self._run(claim.run_id)
            now = self.clock.now()
            self._check_lease(run, claim, now)
            run.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
            return self._snapshot(run, now)

    def commit_activation(
        self, claim: RunClaim, activation: Activation, eager: Eager | None = None
    ) -> Dispatch:
        with self._lock:
            run = self._run(claim.run_id)
            now = self.clock.now()
            self._check_lease(run, claim, now)
            if run.revision != claim.revision:
                raise StaleClaim(run.id)
            dispatch = Dispatch()
            for new in activation.events:
                event = self._append(run, new, claim.now)
                self._apply(run, event, now, dispatch, eager)
            run.status = (
                activation.outcome
                if activation.outcome != Outcome.SUSPENDED
                else (RunStatus.SUSPENDED)
            )
            if activation.attributes is not None:
                run.attributes = activation.attributes
            if activation.state is not None:
                run.state = activation.state
            run.next_wakeup_at = None
            run.lease_owner = ""
            run.lease_expires_at = None
            run.revision += 1
            if run.status in RunStatus.FINAL:
                run.result = activation.result
                run.error = activation.error
                self._finish(run, now, dispatch)
            elif run.status == RunStatus.CONTINUED:
                self._continue(run, now, dispatch)
            return dispatch

    def _continue(self, run: MemoryRun, now: dt.datetime, dispatch: Dispatch) -> None:
        self._close_open_work(run)
        successor = self._insert(
            successor_run(
                run.events[-1],
                run_id=run.id,
                namespace=run.namespace,
                attributes=run.attributes,
                depth=run.depth,
                parent_run_id=run.parent_run_id,
                parent_command_id=run.parent_command_id,
                chain_root_id=run.chain_root_id,
                state=run.state,
                deadline=run.deadline,
                flow=(run.events[0].payload or {}).get("flow"),  # recorded, not enforced
            ),
            now,
            dispatch,
        )
        run.successor_id = successor.id
        for signal in self.signals.values():
            if signal.run_id == run.id and signal.consumed_seq is None:
                signal.run_id = successor.id
        for child in self._children(run):  # they belong to the chain (see the ORM journal)
            child.parent_run_id, child.parent_command_id = successor.id, ""
            child.revision += 1

    def _apply(
        self,
        run: MemoryRun,
        event: Event,
        now: dt.datetime,
        dispatch: Dispatch,
        eager: Eager | None = None,
    ) -> None:
        if event.type in (EventType.ACTIVITY_SCHEDULED, EventType.COMPENSATION_SCHEDULED):
            fields = task_fields(event.payload)
            task = MemoryTask(
                id=next(self._ids),
                run_id=run.id,
                command_id=event.command_id,
                kind=task_kind(event.type),
                next_attempt_at=now,
                schedule_deadline=seconds_after(now, fields["schedule_to_close_timeout"]),
                **fields,
            )
            self.tasks[task.id] = task
            if eager and dispatch.eager_activity is None and task.queue == eager.queue:
                dispatch.eager_activity = self._lease_task(task, eager.owner, eager.lease_seconds)
            else:
                dispatch.activities.append((task.id, task.queue, None))
        elif event.type == EventType.TIMER_SCHEDULED:
            fire_at = dt.datetime.fromisoformat(event.payload["fire_at"])
            timer = MemoryTimer(
                id=next(self._ids), run_id=run.id, command_id=event.command_id, fire_at=fire_at
            )
            self.timers[timer.id] = timer
            if (fire_at - now).total_seconds() <= ETA_HORIZON_SECONDS:
                dispatch.runs.append((run.id, fire_at))
        elif event.type == EventType.CHILD_STARTED:
            self._insert(child_run(run.id, event), now, dispatch)
        elif event.type == EventType.SIGNAL_RECEIVED:
            self.signals[event.payload["signal_id"]].consumed_seq = event.seq
            for timer in self.timers.values():
                if timer.run_id == run.id and timer.command_id == event.command_id:
                    timer.cancelled = not timer.fired

    def park_run(self, claim: RunClaim, reason: str, detail: str) -> None:
        with self._lock:
            run = self._run(claim.run_id)
            self._check_lease(run, claim, self.clock.now())
            run.status = RunStatus.SUSPENDED
            run.park_reason = reason
            run.park_detail = detail
            run.lease_owner = ""
            run.lease_expires_at = None

    def record_failure(self, run_id: str, error: Exception, limit: int) -> bool:
        with self._lock:
            run = self.runs.get(run_id)
            if run is None or run.status in RunStatus.TERMINAL or run.park_reason:
                return False
            if run.failure_revision == run.revision:
                run.failure_count += 1
            else:
                run.failure_count, run.failure_revision = 1, run.revision
            if run.failure_count < limit:
                return False
            detail = quarantine_detail(error_payload(error), run.failure_count, run.revision)
            run.status = RunStatus.SUSPENDED
            run.park_reason, run.park_detail = ParkReason.ERROR, detail
            run.lease_owner, run.lease_expires_at = "", None
            return True

    def release_parked(self, keys: VersionKeys | None, note: str) -> Dispatch:
        with self._lock:
            now = self.clock.now()
            dispatch = Dispatch()
            for run in self.runs.values():
                if (
                    run.park_reason == ParkReason.UNKNOWN_VERSION
                    and run.status not in RunStatus.TERMINAL
                    and on_versions(run.workflow_name, run.version, keys)
                ):
                    run.park_reason = ""
                    run.park_detail = f"{note}; before that: {run.park_detail}"
                    self._wake(run, now, dispatch)
            return dispatch

    # -- activities ----------------------------------------------------------

    def claim_activity(
        self, task_id: int, owner: str, lease_seconds: float
    ) -> ActivityClaim | None:
        with self._lock:
            task = self.tasks.get(int(task_id))
            now = self.clock.now()
            if task is None or task.status != TaskStatus.SCHEDULED or task.next_attempt_at > now:
                return None
            if task.schedule_deadline is not None and task.schedule_deadline <= now:
                return None
            return self._lease_task(task, owner, lease_seconds)

    def _lease_task(self, task: MemoryTask, owner: str, lease_seconds: float) -> ActivityClaim:
        lease_task(task, owner, lease_seconds, self.clock.now())
        return self._activity_claim(task)

    def _held_task(self, claim: ActivityClaim, now: dt.datetime) -> MemoryTask:
        return check_attempt(self.tasks[claim.task_id], claim, now)

    def renew_activity(
        self,
        claim: ActivityClaim,
        lease_seconds: float,
        details: Any = None,
        heartbeat: bool = False,
    ) -> bool:
        with self._lock:
            now = self.clock.now()
            task = self._held_task(claim, now)
            task.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
            if heartbeat:
                task.heartbeat_details = details
                task.heartbeat_deadline = seconds_after(now, task.heartbeat_timeout)
            return task.cancel_requested

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
        # ``then`` is declined: in memory a step costs no round trips worth saving.
        with self._lock:
            now = self.clock.now()
            run = self._run(claim.run_id)
            task = self._held_task(claim, now)
            dispatch = self._end_attempt(run, task, now, result, error, retry_delay)
            free = run.lease_expires_at is None or run.lease_expires_at <= now
            late = run.deadline is not None and run.deadline <= now
            if (
                eager
                and (run.id, None) in dispatch.runs
                and free
                and not run.park_reason
                and not late
            ):
                dispatch.runs.remove((run.id, None))
                dispatch.eager_run = self._lease_run(run, eager.owner, eager.lease_seconds, now)
            return dispatch

    def finish_in_transaction(
        self,
        claim: ActivityClaim,
        body: Callable[[], Any],
        *,
        using: str | None = None,
        eager: Eager | None = None,
    ) -> Dispatch | None:
        # No database here: the body runs under the journal's lock, as under the row locks
        # of the ORM journal, and what it does outside the journal is its own affair.
        with self._lock:
            now = self.clock.now()
            run = self._run(claim.run_id)
            task = self._held_task(claim, now)
            if run.status in RunStatus.TERMINAL:
                self._end_attempt(run, task, now, None, None, None)  # cancels the task
                return None
            result = body()
            return self.finish_activity(claim, result=result, eager=eager)

    def _end_attempt(
        self,
        run: MemoryRun,
        task: MemoryTask,
        now: dt.datetime,
        result: Any,
        error: dict[str, Any] | None,
        retry_delay: float | None,
    ) -> Dispatch:
        dispatch = Dispatch()
        task.lease_owner = ""
        task.lease_expires_at = None
        if run.status in RunStatus.TERMINAL:
            task.status = TaskStatus.CANCELLED
            task.result, task.error = result, error
            return dispatch
        if error is None:
            task.status = TaskStatus.COMPLETED
            task.result = result
            new = NewEvent(
                type=outcome_type(task.kind, failed=False),
                command_id=task.command_id,
                payload={"result": result},
            )
        else:
            retry_at = seconds_after(now, retry_delay)
            if retry_at is not None and (
                task.schedule_deadline is None or retry_at < task.schedule_deadline
            ):
                task.status = TaskStatus.SCHEDULED
                task.next_attempt_at = retry_at
                task.error = error
                dispatch.activities.append((task.id, task.queue, retry_at))
                return dispatch
            task.status = TaskStatus.FAILED
            task.error = error
            new = NewEvent(
                type=outcome_type(task.kind, failed=True),
                command_id=task.command_id,
                payload={"error": error, "attempts": task.attempt},
            )
        self._append(run, new, now)
        self._wake(run, now, dispatch)
        return dispatch

    def expired_activities(self, limit: int) -> list[ActivityClaim]:
        with self._lock:
            now = self.clock.now()
            found = []
            for task in self.tasks.values():
                if task.status in TaskStatus.OPEN and (reason := expiry_reason(task, now)):
                    found.append(self._activity_claim(task, reason))
            return found[:limit]

    def time_out_activity(self, claim: ActivityClaim, retry_delay: float | None) -> Dispatch:
        with self._lock:
            now = self.clock.now()
            run = self._run(claim.run_id)
            task = self.tasks[claim.task_id]
            reason = expiry_reason(task, now)
            if task.lease_token != claim.token or task.status not in TaskStatus.OPEN or not reason:
                raise LeaseLost(f"activity task {task.id} changed since it expired")
            task.lease_token += 1
            error = timeout_error(reason, task.attempt)
            delay = None if reason == "schedule_to_close" else retry_delay
            return self._end_attempt(run, task, now, None, error, delay)

    # -- sweeping ------------------------------------------------------------

    def fire_due_timers(self, limit: int) -> Dispatch:
        with self._lock:
            now = self.clock.now()
            dispatch = Dispatch()
            due = [
                t for t in self.timers.values() if not (t.fired or t.cancelled) and t.fire_at <= now
            ]
            for timer in due[:limit]:
                self._fire(timer, now, dispatch)
            return dispatch

    def due_activities(self, limit: int, grace_seconds: float) -> Dispatch:
        with self._lock:
            now = self.clock.now()
            cutoff = now - dt.timedelta(seconds=grace_seconds)
            dispatch = Dispatch()
            for task in self.tasks.values():
                if task.status == TaskStatus.SCHEDULED and task.next_attempt_at <= cutoff:
                    task.next_attempt_at = now
                    dispatch.activities.append((task.id, task.queue, None))
                    if len(dispatch.activities) >= limit:
                        break
            return dispatch

    def due_runs(self, limit: int, grace_seconds: float) -> Dispatch:
        with self._lock:
            now = self.clock.now()
            cutoff = now - dt.timedelta(seconds=grace_seconds)
            dispatch = Dispatch()
            for run in self.runs.values():
                if (
                    run.status not in RunStatus.TERMINAL
                    and not run.park_reason
                    and run.next_wakeup_at is not None
                    and run.next_wakeup_at <= cutoff
                    and (run.lease_expires_at is None or run.lease_expires_at <= now)
                ):
                    run.next_wakeup_at = now
                    dispatch.runs.append((run.id, None))
                    if len(dispatch.runs) >= limit:
                        break
            return dispatch

    def time_out_runs(self, limit: int) -> Dispatch:
        with self._lock:
            now = self.clock.now()
            dispatch = Dispatch()
            late = [
                run
                for run in self.runs.values()
                if run.status not in RunStatus.TERMINAL
                and run.deadline is not None
                and run.deadline <= now
            ]
            for run in sorted(late, key=lambda r: r.deadline or now)[:limit]:
                self._time_out(run, now, dispatch)
            return dispatch

    def _time_out(self, run: MemoryRun, now: dt.datetime, dispatch: Dispatch) -> None:
        assert run.deadline is not None
        reason = f"the parent run {run.id} timed out"
        for child in self._children(run):
            self._cancel(child, reason, True, now, dispatch)
        timed_out, failed = timed_out_events(run.deadline)
        self._append(run, timed_out, now)
        self._append(run, failed, now)
        run.status = RunStatus.FAILED
        run.error = failed.payload["error"]
        run.lease_owner = ""
        run.lease_expires_at = None
        run.next_wakeup_at = None
        run.revision += 1
        dispatch.timed_out.append(run.id)
        self._finish(run, now, dispatch)

    # -- client-side writes --------------------------------------------------

    def deliver_signal(
        self, run_id: str, name: str, payload: Any, dedupe_key: str | None
    ) -> Dispatch:
        with self._lock:
            run = self._tip(run_id)
            if run.status in RunStatus.TERMINAL:
                raise RunNotActive(
                    f"run {run.id} is {run.status}; it cannot take signal {name!r}",
                    run_id=run.id,
                    status=run.status,
                )
            if dedupe_key is not None and any(
                self.runs[s.run_id].chain_root_id == run.chain_root_id
                and (s.name, s.dedupe_key) == (name, dedupe_key)
                for s in self.signals.values()
            ):
                return Dispatch()
            limit = self._max_unread_signals
            unread = sum(
                1 for s in self.signals.values() if s.run_id == run.id and s.consumed_seq is None
            )
            if limit is not None and unread >= limit:
                raise mailbox_full(run.id, name, limit)
            signal = MemorySignal(
                id=next(self._ids),
                run_id=run.id,
                name=name,
                payload=payload,
                dedupe_key=dedupe_key,
            )
            self.signals[signal.id] = signal
            dispatch = Dispatch()
            self._wake(run, self.clock.now(), dispatch)
            return dispatch

    def signal_with_start(
        self, new: NewRun, name: str, payload: Any, dedupe_key: str | None
    ) -> tuple[str, bool, Dispatch]:
        with self._lock:
            existing = self._keyed(new)
            if existing is not None:
                return (
                    existing.id,
                    False,
                    self.deliver_signal(existing.id, name, payload, dedupe_key),
                )
            run_id, _, dispatch = self.create_run(new)
            self.deliver_signal(run_id, name, payload, dedupe_key)  # same wake-up as the start
            return run_id, True, dispatch

    def request_cancel(self, run_id: str, reason: str, terminate: bool) -> Dispatch:
        with self._lock:
            run = self._tip(run_id)
            if run.status in RunStatus.TERMINAL:
                raise RunNotActive(
                    f"run {run.id} is already {run.status}; there is nothing to cancel",
                    run_id=run.id,
                    status=run.status,
                )
            dispatch = Dispatch()
            self._cancel(run, reason, terminate, self.clock.now(), dispatch)
            return dispatch

    def history(self, run_id: str) -> list[Event]:
        with self._lock:
            return list(self._run(run_id).events)

    def on_thread_exit(self) -> None:
        return None
