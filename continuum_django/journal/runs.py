"""Run writes: start, claim, commit an activation, park, signal, cancel, and sweeping runs."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from functools import cached_property
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, connections
from django.db.models import F, Q
from django.db.models.functions import Now

from ..engine.events import Event, EventType, NewEvent
from ..engine.exceptions import RunNotActive, RunNotFound, mailbox_full
from ..engine.journal import (
    ETA_HORIZON_SECONDS,
    Dispatch,
    Eager,
    NewRun,
    ParkReason,
    RunClaim,
    StaleClaim,
    VersionKeys,
    child_outcome,
    child_run,
    flow_fields,
    lease_task,
    quarantine_detail,
    seconds_after,
    successor_run,
    task_fields,
    task_kind,
    timed_out_events,
)
from ..engine.replay import Activation, Outcome
from ..engine.retry import error_payload
from ..models import (
    TERMINAL,
    ActivityTask,
    RunStatus,
    Signal,
    Timer,
    WorkflowEvent,
    WorkflowRun,
)
from . import internals
from .base import (
    LEASE_FIELDS,
    RUN_ENDED,
    WRITTEN_RUN_COLUMNS,
    OrmBase,
    activity_claim,
    past_deadline,
    to_event,
)
from .lean import STATEMENT_CLOCK, Guarded, Insert, Pending
from .starts import signed_start
from .starts_flow import StartFlow, start_limits
from .timers import fire_batch

FINAL = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED]
# Events whose commands write more than a task row (a timer, a child run, a consumed signal).
WIDE_EVENTS = frozenset(
    {EventType.TIMER_SCHEDULED, EventType.CHILD_STARTED, EventType.SIGNAL_RECEIVED}
)
# Events that open an activity task, and those that record how one ended.
OPENING = frozenset({EventType.ACTIVITY_SCHEDULED, EventType.COMPENSATION_SCHEDULED})
CLOSING = frozenset(
    {
        EventType.ACTIVITY_COMPLETED, EventType.ACTIVITY_FAILED,
        EventType.COMPENSATION_COMPLETED, EventType.COMPENSATION_FAILED,
    }
)  # fmt: skip
# An activity task's columns that `_tasks` sets from the clock it is given.
TASK_CLOCK_FIELDS = (
    "next_attempt_at", "schedule_deadline", "lease_expires_at", "attempt_deadline",
    "heartbeat_deadline",
)  # fmt: skip
STARTED_MAX_CHARS = 4_096  # a larger input stays out of the first advance's message
END_FIELDS = ["status", "result", "error", "finished_at", "next_wakeup_at", *LEASE_FIELDS]


def end_notice(run: WorkflowRun) -> str:
    """The payload announcing that ``run`` ended: JSON naming its chain (the root's id) and
    the run, nothing else. A hint to `result()`, which reads the run again when it hears
    one: any database role may NOTIFY the channel, and any may LISTEN to it."""
    return _notice(str(run.chain_root_id), str(run.id))


# Stands for a chain's id in a notice whose statement fills it in (`_announce`): a UUID's
# length, so that the notice measures what the sent one will.
_CHAIN = str(uuid.UUID(int=0))


def _notice(chain: str, run_id: str) -> str:
    return json.dumps({"chain": chain, "run": run_id}, separators=(",", ":"))


def _first(claim: RunClaim) -> bool:
    """Whether ``claim`` is the basis of a run's first advance, which may come from its
    message (`advance_run`'s ``started``) rather than a read: a hint, so the write that
    commits it also checks it against the stored ``run_started`` event."""
    return claim.optimistic and claim.revision == 1 and len(claim.history) == 1


def _limited(claim: RunClaim, activation: Activation) -> bool:
    """Whether ``activation`` ends a run with start limits, whose slot its end hands on (see
    `StartFlow`), or starts a child with some, which is admitted as it is inserted."""
    if activation.outcome in FINAL and start_limits(claim) is not None:
        return True
    return any(
        event.type == EventType.CHILD_STARTED and (event.payload or {}).get("flow")
        for event in activation.events
    )


def _closed(events: list[Any]) -> bool:
    """Whether a run whose history is ``events`` leaves nothing open when it ends: no timer
    or child run ever, and every activity or compensation scheduled has its outcome (its
    task is then neither scheduled nor running). So its end need not look for open work."""
    scheduled: set[str | None] = set()
    for event in events:
        if event.type in OPENING or event.type == EventType.ACTIVITY_RETRY_SCHEDULED:
            scheduled.add(event.command_id)
        elif event.type in CLOSING:
            scheduled.discard(event.command_id)
        elif event.type in (EventType.TIMER_SCHEDULED, EventType.CHILD_STARTED):
            return False
    return not scheduled


class RunJournal(StartFlow, OrmBase):
    def create_run(self, new: NewRun) -> tuple[str, bool, Dispatch]:
        if new.flow is not None:  # admitted in the insert's transaction (`admit_start`)
            with self._atomic():
                run_id, created, dispatch = self._create_run(new)
                if created:
                    self.admit_start(new, dispatch)
                return run_id, created, dispatch
        return self._create_run(new)

    def _create_run(self, new: NewRun) -> tuple[str, bool, Dispatch]:
        key = {
            "namespace": new.namespace,
            "workflow_name": new.workflow_name,
            "idempotency_key": new.idempotency_key,
        }
        dispatch = Dispatch()
        self._offer_start(new, dispatch)
        if new.timeout is not None and new.deadline is None:
            with self._atomic():  # the deadline is set on the database's clock, see below
                return self._create_with_deadline(new, key, dispatch)
        if new.idempotency_key is None:
            if self.sql.single():  # one statement inserts the run and its first event
                return str(self._insert_run(new, dispatch).id), True, dispatch
            # Pipelined when it is a transaction of its own: one round trip, and the commit.
            with self.sql.transaction():
                return str(self._insert_run(new, dispatch).id), True, dispatch
        with self._atomic():
            existing = self._runs().filter(**key).values_list("id", flat=True).first()
            if existing is not None:
                return str(existing), False, Dispatch()
            try:
                # A savepoint, so that losing an idempotency race leaves the caller's
                # transaction usable.
                with self._atomic():
                    run = self._insert_run(new, dispatch)
            except IntegrityError:
                existing = self._runs().filter(**key).values_list("id", flat=True).first()
                if existing is None:
                    raise
                return str(existing), False, Dispatch()
        return str(run.id), True, dispatch

    def _create_with_deadline(
        self, new: NewRun, key: dict[str, Any], dispatch: Dispatch
    ) -> tuple[str, bool, Dispatch]:
        """`create_run` of a run with a ``timeout``: its deadline is ``timeout`` seconds
        after the transaction's clock, as every time that decides correctness is."""
        assert new.timeout is not None
        if new.idempotency_key is not None:
            existing = self._runs().filter(**key).values_list("id", flat=True).first()
            if existing is not None:
                return str(existing), False, Dispatch()
        try:
            with self._atomic():  # a savepoint: see the idempotency race in `create_run`
                run = self._insert_run(new, dispatch)
        except IntegrityError:
            existing = self._runs().filter(**key).values_list("id", flat=True).first()
            if existing is None or new.idempotency_key is None:
                raise
            return str(existing), False, Dispatch()
        deadline = Now() + dt.timedelta(seconds=new.timeout)
        self._runs().filter(pk=run.id).update(deadline=deadline)
        return str(run.id), True, dispatch

    @staticmethod
    def _offer_start(new: NewRun, dispatch: Dispatch) -> None:
        """Let the run's first advance message carry its ``run_started`` payload when it is
        small: all the advance would read of a run that nothing else has touched yet."""
        payload = new.started_payload()
        if len(json.dumps(payload, separators=(",", ":"))) <= STARTED_MAX_CHARS:
            dispatch.starts[new.run_id] = signed_start(new.run_id, payload)

    def claim_run(self, run_id: str, owner: str, lease_seconds: float) -> RunClaim | None:
        # No unread/due-timer probes in the locking statement: a SELECT ... FOR UPDATE that
        # waited for the row (a signal being delivered, an activation being written) reads
        # the row as that writer left it, but its subqueries keep the snapshot from before
        # the wait, so the probes could deny the very signal or timer that made it wait
        # (and the run would suspend over it: a lost wake-up). The mailbox and the due
        # timers are read after the lock instead.
        with self._atomic():
            try:
                run, now = self._lock_run(run_id)
            except RunNotFound:
                return None
            if run.status in TERMINAL or run.park_reason:
                return None
            if run.lease_expires_at is not None and run.lease_expires_at > now:
                return None
            if past_deadline(run, now):
                return None  # `time_out_runs` ends it
            timers = Timer.objects.using(self.using)
            due = list(timers.filter(run_id=run.id, fired=False, cancelled=False, fire_at__lte=now))
            if due:
                fired = [NewEvent(type=EventType.TIMER_FIRED, command_id=t.command_id) for t in due]
                self._append(run, fired, now)
                timers.filter(pk__in=[t.pk for t in due]).update(fired=True)
                run.revision += 1
                run.next_wakeup_at = now
            if run.next_wakeup_at is None or run.next_wakeup_at > now:
                return None
            return self._lease_run(run, owner, lease_seconds, now)

    def refresh_claim(self, claim: RunClaim, lease_seconds: float) -> RunClaim:
        with self._atomic():
            run, now = self._lock_run(claim.run_id)  # no probes under FOR UPDATE: see claim_run
            self._check_lease(run, claim, now)
            run.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
            self.sql.update(run, ["lease_expires_at"])
            return self._claim_of(run, now)

    def snapshot_run(self, run_id: str) -> RunClaim | None:
        try:
            run, now = self._lock_run(run_id, for_update=False, flags=True)
        except RunNotFound:
            return None
        if run.status in TERMINAL or run.park_reason or run.due_timers:  # type: ignore[attr-defined]
            return None  # ended, parked, or timers to fire first: under a lease
        if past_deadline(run, now):
            return None  # `time_out_runs` ends it
        if run.lease_expires_at is not None and run.lease_expires_at > now:
            return None
        if run.next_wakeup_at is None or run.next_wakeup_at > now:
            return None
        return self._claim_of(run, now, optimistic=True)

    def commit_activation(
        self, claim: RunClaim, activation: Activation, eager: Eager | None = None
    ) -> Dispatch:
        if claim.optimistic and self._single(claim, activation):
            return self._commit_in_one(claim, activation, eager)
        if claim.optimistic and self._foldable(claim, activation):
            with self.sql.transaction():  # pipelined, see `Statements.transaction`
                last_seq = len(claim.history)
                written = self._write_run(claim, activation, last_seq, claim.revision, False)
                if written is None:
                    raise StaleClaim(claim.run_id)
                run, now = written
                rows = self._append(run, activation.events, claim.now)
                return self._apply(
                    run, claim, activation, claim.history, rows, rows, now, eager, written=True
                )
        with self._atomic():
            if activation.outcome in FINAL and claim.parent_run_id:
                self._lock_run(claim.parent_run_id)  # parent before child: it hears the end
            run, now = self._lock_run(claim.run_id)
            if claim.optimistic:
                if not self._unchanged(run, claim, now) or not self._started_as_claimed(claim):
                    raise StaleClaim(claim.run_id)
            else:
                self._check_lease(run, claim, now)
                if run.revision != claim.revision:
                    raise StaleClaim(claim.run_id)
            # The activation's events carry the time its code saw (ctx times derive from it).
            rows = self._append(run, activation.events, claim.now)
            return self._apply(run, claim, activation, claim.history, rows, rows, now, eager)

    def _apply(
        self,
        run: WorkflowRun,
        claim: RunClaim,
        activation: Activation,
        known: list[Event],
        appended: list[WorkflowEvent],
        made: list[WorkflowEvent],
        now: dt.datetime,
        eager: Eager | None,
        written: bool = False,
    ) -> Dispatch:
        """Write what the activation decided, its events ``made`` already appended (with any
        others, all ``appended`` after the history ``known``): schedule its commands, then
        suspend or end the run, releasing its lease (``written``: the run's row already is,
        by `_write_run`)."""
        dispatch = Dispatch()
        self._schedule(run, made, now, dispatch, eager)
        if not written:
            self.sql.update(run, self._settle(run, activation, now))
        if run.status in FINAL:
            self._end(run, activation.result, activation.error, now, dispatch, saved=True)
        elif run.status == RunStatus.CONTINUED:
            self._continue(run, to_event(made[-1]), now, dispatch)
        return self._left(run, claim, known, appended, made, now, eager, dispatch)

    def _left(
        self,
        run: WorkflowRun,
        claim: RunClaim,
        known: list[Event],
        appended: list[WorkflowEvent],
        made: list[WorkflowEvent],
        now: dt.datetime,
        eager: Eager | None,
        dispatch: Dispatch,
    ) -> Dispatch:
        """What is kept once an activation is written: an ended run's history is forgotten;
        a run still going has its history remembered and, for an eager step, ``dispatch``
        gets the run as this activation leaves it (the next speculation's basis). (The
        basis first: outside a transaction `_remember` extends the cached history at once,
        which may be ``known`` itself.)"""
        if run.status in TERMINAL:
            self._histories.pop(claim.run_id, None)
            return dispatch
        if eager is not None and run.status == RunStatus.SUSPENDED:
            consumed = {
                (row.payload or {}).get("signal_id")
                for row in made
                if row.type == EventType.SIGNAL_RECEIVED
            }
            dispatch.basis = RunClaim(
                run_id=claim.run_id,
                token=run.lease_token,
                revision=run.revision,
                parent_run_id=claim.parent_run_id,
                workflow_name=claim.workflow_name,
                version=claim.version,
                history=[*known, *(to_event(row) for row in appended)],
                mailbox=[s for s in claim.mailbox if s.id not in consumed],
                now=now,
                optimistic=True,
            )
        self._remember(claim.run_id, appended)
        return dispatch

    def _settle(self, run: WorkflowRun, activation: Activation, now: Any) -> list[str]:
        """Set the run's fields as the activation leaves it: suspended or ended, its lease
        released. Returns the fields to write."""
        run.status = (
            RunStatus.SUSPENDED if activation.outcome == Outcome.SUSPENDED else activation.outcome
        )
        run.next_wakeup_at = None
        run.lease_owner = ""
        run.lease_expires_at = None
        run.revision += 1
        fields = ["status", "next_wakeup_at", "revision", "last_seq"]
        if activation.attributes is not None:
            run.attributes = activation.attributes
            fields.append("attributes")
        if activation.state is not None:
            run.published_state = activation.state
            fields.append("published_state")
        if run.status in FINAL:  # one write for the activation and the end
            run.result, run.error, run.finished_at = activation.result, activation.error, now
            fields += ["result", "error", "finished_at"]
        return [*fields, *LEASE_FIELDS, "updated_at"]

    def _foldable(self, claim: RunClaim, activation: Activation) -> bool:
        """Whether `_write_run` can write this activation: it suspends the run, or ends a run
        without a parent (whose row would have to be locked first); and it neither ends a
        run with start limits nor starts a child with some (their slots are handed on or
        admitted by reads that a pipelined transaction cannot make: see `_limited`)."""
        if _limited(claim, activation):
            return False
        return activation.outcome == Outcome.SUSPENDED or (
            activation.outcome in FINAL and not claim.parent_run_id
        )

    def _single(self, claim: RunClaim, activation: Activation) -> bool:
        """Whether the activation's writes fit in one statement (`Statements.step`, when
        `single` holds): its commands write nothing but task rows, and it suspends the run,
        or ends a run without a parent that leaves nothing open (see `_closed`)."""
        if any(event.type in WIDE_EVENTS for event in activation.events):
            return False
        if _limited(claim, activation):
            return False
        if activation.outcome != Outcome.SUSPENDED and (
            activation.outcome not in FINAL
            or claim.parent_run_id
            or not _closed([*claim.history, *activation.events])
        ):
            return False
        return self.sql.single()

    def _commit_in_one(
        self, claim: RunClaim, activation: Activation, eager: Eager | None
    ) -> Dispatch:
        """`commit_activation` of an optimistic claim in one statement (see `_single`)."""
        dispatch = self._in_one(claim, activation, eager)
        if dispatch is None:
            raise StaleClaim(claim.run_id)
        return dispatch

    def _in_one(
        self,
        claim: RunClaim,
        activation: Activation,
        eager: Eager | None,
        woken_by: NewEvent | None = None,
        attempt: Guarded[ActivityTask] | None = None,
    ) -> Dispatch | None:
        """Write ``activation`` in one statement (`Statements.step`): the run's row, its
        events and the tasks it schedules, built on `STATEMENT_CLOCK`, which the statement
        replaces with its clock. ``woken_by``: the event that woke the run (an activity's
        result, the claim's history ending with it), written first; ``attempt``: the
        guarded UPDATE of the attempt that result ends. None when the run changed (nothing
        written); `AttemptLost` when the attempt did."""
        known = claim.history[:-1] if woken_by is not None else claim.history
        last_seq = len(known)
        update = self._run_write(claim, activation, last_seq, claim.revision, woken_by is not None)
        run = update.instance
        run.last_seq = last_seq  # the rows are numbered from here
        done = self._rows(run, [woken_by], STATEMENT_CLOCK) if woken_by is not None else []
        made = self._rows(run, activation.events, claim.now)
        tasks, leased = self._tasks(run, made, STATEMENT_CLOCK, eager)
        inserts = [
            Insert(done, shifted=("created_at",)),
            Insert(made),
            Insert(tasks, TASK_CLOCK_FIELDS, returning=True),
        ]
        announce = self._announce(claim, activation)
        written = self.sql.step(update, WRITTEN_RUN_COLUMNS, attempt, inserts, announce)
        if written is None:
            return None
        stored, now = written
        dispatch = self._tasks_sent(tasks, leased)
        return self._left(stored, claim, known, [*done, *made], made, now, eager, dispatch)

    def _announce(self, claim: RunClaim, activation: Activation) -> tuple[str, list[Any]] | None:
        """For a step that ends the run, the NOTIFY that announces it (`end_notice`'s), an
        expression over the run's row that `Statements.step` returns: the statement fills
        in the chain's id. None for a step that does not end the run."""
        if activation.outcome not in FINAL:
            return None
        notice = _notice(_CHAIN, claim.run_id)
        head = '{"chain":"'
        assert notice.startswith(head + _CHAIN)
        chain = internals.quoter(connections[self.using])("chain_root_id")
        sql = f"pg_notify(%s, %s || COALESCE(step_run.{chain}::text, 'None') || %s) IS NULL"
        return sql, [RUN_ENDED, head, notice[len(head) + len(_CHAIN) :]]

    def _write_run(
        self, claim: RunClaim, activation: Activation, last_seq: int, revision: int, woken: bool
    ) -> tuple[WorkflowRun, dt.datetime] | None:
        """Write the run's row as ``activation`` leaves it, if the run is still at ``revision``
        and ``last_seq``, nobody holds its lease and it is neither parked nor ended: one
        UPDATE that locks, checks and writes, instead of a row lock and then a write.
        ``woken``: an activity's result is appended before the activation's events (and
        wakes the run, one more revision). Returns the run, its events numbered from
        ``last_seq`` again for the caller to append, and the database's clock; or None
        (nothing written) when the run changed."""
        sent = self._send_write_run(claim, activation, last_seq, revision, woken)
        return self._written(sent, last_seq)

    def _send_write_run(
        self, claim: RunClaim, activation: Activation, last_seq: int, revision: int, woken: bool
    ) -> Pending[WorkflowRun]:
        """`_write_run`'s UPDATE, read later with `_written` (see `Statements.transaction`)."""
        update = self._run_write(claim, activation, last_seq, revision, woken)
        return self.sql.update_returning(
            update.instance, update.attnames, update.guard, update.guard_params,
            WRITTEN_RUN_COLUMNS,
        )  # fmt: skip

    def _run_write(
        self, claim: RunClaim, activation: Activation, last_seq: int, revision: int, woken: bool
    ) -> Guarded[WorkflowRun]:
        """`_write_run`'s UPDATE: the run's row as the activation leaves it, and its guard."""
        appended = len(activation.events) + woken
        run = self.sql.partial(
            WorkflowRun, id=claim.run_id, revision=revision + woken, last_seq=last_seq + appended
        )
        fields = self._settle(run, activation, Now())
        params = [("revision", revision), ("last_seq", last_seq), ("park_reason", "")]
        params += [("status", status) for status in TERMINAL]
        if _first(claim):  # its history may be a message's: the database must agree
            params.append(("input", claim.history[0].payload))
            return Guarded(run, fields, self._first_run_guard, params)
        return Guarded(run, fields, self._run_guard, params)

    @cached_property
    def _run_guard(self) -> str:
        """`_run_write`'s guard: the run is as the activation found it, live and unleased."""
        quote = internals.quoter(connections[self.using])
        live = ", ".join(["%s"] * len(TERMINAL))
        return (
            f"{quote('revision')} = %s AND {quote('last_seq')} = %s"
            f" AND {quote('park_reason')} = %s AND {quote('status')} NOT IN ({live})"
            f" AND ({quote('lease_expires_at')} IS NULL OR {quote('lease_expires_at')} <= {{now}})"
            f" AND ({quote('deadline')} IS NULL OR {quote('deadline')} > {{now}})"
        )

    @cached_property
    def _first_run_guard(self) -> str:
        """`_run_guard` for a run's first advance (see `_first`): its stored ``run_started``
        payload also equals the one the activation replayed (jsonb equality)."""
        quote = internals.quoter(connections[self.using])
        runs, events = quote(WorkflowRun._meta.db_table), quote(WorkflowEvent._meta.db_table)
        return (
            f"{self._run_guard} AND EXISTS (SELECT 1 FROM {events} e WHERE"
            f" e.{quote('run_id')} = {runs}.{quote('id')} AND e.{quote('seq')} = 1"
            f" AND e.{quote('payload')} = %s)"
        )

    def _started_as_claimed(self, claim: RunClaim) -> bool:
        """Whether the run's stored ``run_started`` payload is the one ``claim`` holds (only
        asked of a first advance, see `_first`; the locked path's `_first_run_guard`)."""
        if not _first(claim):
            return True
        events = WorkflowEvent.objects.using(self.using)
        first = events.filter(run__pk=claim.run_id, seq=1)
        return first.filter(payload=claim.history[0].payload).exists()

    @staticmethod
    def _written(
        sent: Pending[WorkflowRun], last_seq: int
    ) -> tuple[WorkflowRun, dt.datetime] | None:
        written = sent.fetch()
        if written is None:
            return None
        run, now = written
        run.last_seq = last_seq  # the caller numbers the appended events from here
        run.db_now = now  # type: ignore[attr-defined]
        return run, now

    def _schedule(
        self,
        run: WorkflowRun,
        rows: list[WorkflowEvent],
        now: dt.datetime,
        dispatch: Dispatch,
        eager: Eager | None = None,
    ) -> None:
        """Create the tasks, timers and child runs that the activation's commands ask for."""
        tasks, leased = self._tasks(run, rows, now, eager)
        timers: list[Timer] = []
        for row in rows:
            payload: dict[str, Any] = row.payload or {}
            if row.type == EventType.TIMER_SCHEDULED:
                fire_at = dt.datetime.fromisoformat(payload["fire_at"])
                timers.append(
                    self.sql.new(Timer, run_id=run.id, command_id=row.command_id, fire_at=fire_at)
                )
                if (fire_at - now).total_seconds() <= ETA_HORIZON_SECONDS:
                    dispatch.runs.append((str(run.id), fire_at))
            elif row.type == EventType.CHILD_STARTED:
                child = child_run(str(run.id), to_event(row))
                self._insert_run(child, dispatch, now)
                if child.flow is not None:  # admitted like a start
                    self.admit_start(child, dispatch)
            elif row.type == EventType.SIGNAL_RECEIVED:
                signals = Signal.objects.using(self.using)
                signals.filter(pk=payload["signal_id"]).update(consumed_by=row)
                Timer.objects.using(self.using).filter(
                    run_id=run.id, command_id=row.command_id, fired=False
                ).update(cancelled=True)

        def dispatch_tasks() -> None:  # once their ids are known (after a pipeline's COMMIT)
            sent = self._tasks_sent(tasks, leased)
            dispatch.activities.extend(sent.activities)
            if sent.eager_activity is not None:
                dispatch.eager_activity = sent.eager_activity

        self.sql.insert(tasks, then=dispatch_tasks)
        self.sql.insert(timers, returning=False)

    def _tasks(
        self, run: WorkflowRun, rows: list[WorkflowEvent], now: dt.datetime, eager: Eager | None
    ) -> tuple[list[ActivityTask], ActivityTask | None]:
        """The activity tasks that ``rows`` schedule (not inserted yet), and the one leased
        to this worker at once (``eager``, on its queue), if any."""
        tasks: list[ActivityTask] = []
        for row in rows:
            if row.type in OPENING:
                fields = task_fields(row.payload or {})
                deadline = seconds_after(now, fields["schedule_to_close_timeout"])
                tasks.append(
                    self.sql.new(
                        ActivityTask,
                        run_id=run.id,
                        command_id=row.command_id,
                        kind=task_kind(row.type),
                        next_attempt_at=now,
                        schedule_deadline=deadline,
                        **fields,
                        **flow_fields(row.payload or {}),
                    )
                )
        # A task with flow-control limits is admitted by its claim, never leased here.
        leased = next(
            (t for t in tasks if eager and t.queue == eager.queue and t.flow is None), None
        )
        if leased is not None and eager is not None:
            lease_task(leased, eager.owner, eager.lease_seconds, now)
        return tasks, leased

    @staticmethod
    def _tasks_sent(tasks: list[ActivityTask], leased: ActivityTask | None) -> Dispatch:
        """The hints for inserted ``tasks``: a message for each, but the one leased here."""
        return Dispatch(
            activities=[(t.id, t.queue, None) for t in tasks if t is not leased],
            eager_activity=activity_claim(leased) if leased is not None else None,
        )

    def _end(
        self,
        run: WorkflowRun,
        result: Any,
        error: Any,
        now: dt.datetime,
        dispatch: Dispatch,
        saved: bool = False,
    ) -> None:
        """The run reached a final status: tell its parent (already locked), cancel children.

        ``saved``: the caller already wrote the run's end (result, error, finished_at).
        """
        if not saved:
            run.result, run.error, run.finished_at = result, error, now
            run.next_wakeup_at, run.lease_owner, run.lease_expires_at = None, "", None
            self.sql.update(run, END_FIELDS)
        ends = self._loose_ends(run, notice=end_notice(run))  # wakes result()
        self._close_open_work(run, ends)
        if run.parent_run_id:
            parent, _ = self._lock_run(run.parent_run_id)
            if parent.status not in TERMINAL:
                kind, payload = child_outcome(str(run.id), run.status, result, error)
                new = NewEvent(type=kind, command_id=run.parent_command_id, payload=payload)
                self._append(parent, [new], now)
                self.sql.update(parent, self._wake(parent, now, dispatch))
        for child_id in self._live_children(run) if ends.children else []:
            child, _ = self._lock_run(child_id)
            self._cancel(child, "the parent run ended", False, now, dispatch)
        if run.__dict__.get("flow") is not None:  # loaded: runs with limits end locked
            dispatch.merge(self.hand_off_start(run.workflow_name, run.flow_key))

    def _live_children(self, run: WorkflowRun) -> list[str]:
        children = self._runs().filter(parent_run_id=run.id).exclude(status__in=TERMINAL)
        return [str(pk) for pk in children.order_by("id").values_list("id", flat=True)]

    def _continue(
        self, run: WorkflowRun, continued: Event, now: dt.datetime, dispatch: Dispatch
    ) -> None:
        run.finished_at = now
        self.sql.update(run, ["finished_at"])
        self._close_open_work(run)
        started = self._started(run)
        new = successor_run(
            continued,
            run_id=str(run.id),
            namespace=run.namespace,
            attributes=run.attributes,
            depth=int(started.get("depth", 0)),
            parent_run_id=str(run.parent_run_id) if run.parent_run_id else None,
            parent_command_id=run.parent_command_id,
            chain_root_id=str(run.chain_root_id or run.id),
            state=run.published_state,
            deadline=run.deadline,
            flow=started.get("flow"),  # the successor keeps the slot: no admission
        )
        successor = self._insert_run(new, dispatch)
        Signal.objects.using(self.using).filter(run=run, consumed_by__isnull=True).update(
            run=successor
        )
        # Children still running belong to the chain: the successor cancels them and hears
        # their end, as an event of no command of its own (its command ids start afresh).
        # Their revision moves, so an end written against the old parent is redone.
        # (No cancel is pending here: replay ends a run asked to stop as cancelled, and a
        # cancel that came after the replay read the run made its write stale.)
        self._runs().filter(parent_run_id=run.id).exclude(status__in=TERMINAL).update(
            parent_run_id=successor.id, parent_command_id="", revision=F("revision") + 1
        )

    def _started(self, run: WorkflowRun) -> dict[str, Any]:
        first = WorkflowEvent.objects.using(self.using).filter(run=run, seq=1).first()
        return (first.payload if first else None) or {}

    def _cancel(
        self, run: WorkflowRun, reason: str, terminate: bool, now: dt.datetime, dispatch: Dispatch
    ) -> None:
        """Journal a cancel request (once) on the locked ``run`` and its live descendants."""
        if not run.cancel_requested:
            run.cancel_requested = True
            self._append(
                run, [NewEvent(type=EventType.CANCEL_REQUESTED, payload={"reason": reason})], now
            )
            self._close_open_work(run)
            self.sql.update(run, ["cancel_requested", *self._wake(run, now, dispatch)])
        for child_id in self._live_children(run):
            child, _ = self._lock_run(child_id)
            self._cancel(child, reason, terminate, now, dispatch)
            # A child that ended appended to this run through its own copy of the row.
            run.refresh_from_db(fields=["last_seq", "revision", "next_wakeup_at"])
        if terminate and run.status not in TERMINAL:
            ended = NewEvent(
                type=EventType.RUN_CANCELLED, payload={"reason": reason, "terminated": True}
            )
            self._append(run, [ended], now)
            run.status = RunStatus.CANCELLED
            run.revision += 1
            self.sql.update(run, ["status", "revision", "last_seq", "updated_at"])
            self._end(run, None, None, now, dispatch)

    def time_out_runs(self, limit: int) -> Dispatch:
        dispatch = Dispatch()
        late = self._runs().past_deadline().order_by("deadline")
        for run_id, parent_id in list(late.values_list("id", "parent_run_id")[:limit]):
            with self._atomic():
                if parent_id is not None:
                    self._lock_run(parent_id)  # parent before child: it hears the end
                run, now = self._lock_run(run_id)
                if (
                    run.status in TERMINAL  # another sweep ended it first, or it finished
                    or run.deadline is None
                    or run.deadline > now
                    or run.parent_run_id != parent_id  # reparented meanwhile: next sweep
                ):
                    continue
                self._time_out(run, now, dispatch)
        return dispatch

    def _time_out(self, run: WorkflowRun, now: dt.datetime, dispatch: Dispatch) -> None:
        """End the locked ``run`` at its deadline; its live children are terminated first
        (the way `_cancel` terminates), so that the run hears them end before it does."""
        assert run.deadline is not None
        reason = f"the parent run {run.id} timed out"
        for child_id in self._live_children(run):
            child, _ = self._lock_run(child_id)
            self._cancel(child, reason, True, now, dispatch)
            # The child's end appended to this run through its own copy of the row.
            run.refresh_from_db(fields=["last_seq", "revision", "next_wakeup_at"])
        events = timed_out_events(run.deadline)
        self._append(run, events, now)
        run.status = RunStatus.FAILED
        run.revision += 1
        self.sql.update(run, ["status", "revision", "last_seq", "updated_at"])
        dispatch.timed_out.append(str(run.id))
        self._end(run, None, events[-1].payload["error"], now, dispatch)

    def park_run(self, claim: RunClaim, reason: str, detail: str) -> None:
        with self._atomic():
            run, now = self._lock_run(claim.run_id)
            self._check_lease(run, claim, now)
            run.status = RunStatus.SUSPENDED
            run.park_reason = reason
            run.park_detail = detail
            run.lease_owner = ""
            run.lease_expires_at = None
            self.sql.update(run, ["status", "park_reason", "park_detail", *LEASE_FIELDS])

    def record_failure(self, run_id: str, error: Exception, limit: int) -> bool:
        if isinstance(error, OperationalError | InterfaceError):
            return False  # the database is away or busy: no fault of the run's
        with self._atomic():
            run = self._runs().select_for_update().filter(pk=run_id).first()
            if run is None or run.status in TERMINAL or run.park_reason:
                return False
            if run.failure_revision == run.revision:
                run.failure_count += 1
            else:
                run.failure_count, run.failure_revision = 1, run.revision
            fields = ["failure_count", "failure_revision"]
            parked = run.failure_count >= limit
            if parked:
                payload = error_payload(error)
                run.status = RunStatus.SUSPENDED
                run.park_reason = ParkReason.ERROR
                run.park_detail = quarantine_detail(payload, run.failure_count, run.revision)
                run.lease_owner, run.lease_expires_at = "", None
                fields += ["status", "park_reason", "park_detail", *LEASE_FIELDS]
            run.save(update_fields=[*fields, "updated_at"])
            return parked

    def release_parked(self, keys: VersionKeys | None, note: str) -> Dispatch:
        dispatch = Dispatch()
        runs = self._runs().live().filter(park_reason=ParkReason.UNKNOWN_VERSION)
        if keys is not None:
            wanted = Q(pk__in=[])
            for name, version in keys:
                wanted |= Q(workflow_name=name) & (
                    Q() if version is None else Q(workflow_version=version)
                )
            runs = runs.filter(wanted)
        with self._atomic():
            for run in runs.select_for_update(skip_locked=True).annotate(db_now=Now()):
                run.park_reason = ""
                run.park_detail = f"{note}; before that: {run.park_detail}"
                fields = self._wake(run, run.db_now, dispatch)
                self.sql.update(run, [*fields, "park_reason", "park_detail"])
        return dispatch

    # -- client-side writes --------------------------------------------------

    def deliver_signal(
        self, run_id: str, name: str, payload: Any, dedupe_key: str | None
    ) -> Dispatch:
        dispatch = Dispatch()
        with self._atomic():
            run, now = self._lock_tip(run_id)
            if run.status in TERMINAL:
                raise RunNotActive(
                    f"run {run.id} is {run.status}; it cannot take signal {name!r}",
                    run_id=str(run.id),
                    status=run.status,
                )
            root = run.chain_root_id or run.id
            signals = Signal.objects.using(self.using)
            if (
                dedupe_key is not None
                and signals.filter(chain_root_id=root, name=name, dedupe_key=dedupe_key).exists()
            ):
                return dispatch
            limit = self.max_unread_signals()
            unread = signals.filter(run_id=run.id, consumed_by__isnull=True)
            if limit is not None and unread[:limit].count() >= limit:
                raise mailbox_full(str(run.id), name, limit)
            signals.create(
                run=run, chain_root_id=root, name=name, payload=payload, dedupe_key=dedupe_key
            )
            self.sql.update(run, self._wake(run, now, dispatch))
        return dispatch

    def signal_with_start(
        self, new: NewRun, name: str, payload: Any, dedupe_key: str | None
    ) -> tuple[str, bool, Dispatch]:
        # One transaction (or a savepoint in the caller's): a racing caller's insert waits
        # on the key's unique index until this commits, then finds the run and signals it.
        with self._atomic():
            run_id, created, dispatch = self.create_run(new)
            delivered = self.deliver_signal(run_id, name, payload, dedupe_key)
        if not created:
            return run_id, False, delivered
        # The signal moved the new run past the revision its first advance message would
        # assume (`Dispatch.starts`): that advance reads the run, mailbox included.
        dispatch.starts.pop(run_id, None)
        return run_id, True, dispatch

    def _lock_tip(self, run_id: str, with_parent: bool = False) -> tuple[WorkflowRun, dt.datetime]:
        """Lock the live end of the run's chain (and its parent first, when asked)."""
        while True:
            tip = self._tip_id(run_id)
            if with_parent:
                parent = self._runs().filter(pk=tip).values_list("parent_run_id", flat=True)[0]
                if parent:
                    self._lock_run(parent)
            run, now = self._lock_run(tip)
            if run.status != RunStatus.CONTINUED:
                return run, now

    def request_cancel(self, run_id: str, reason: str, terminate: bool) -> Dispatch:
        dispatch = Dispatch()
        with self._atomic():
            run, now = self._lock_tip(run_id, with_parent=terminate)
            if run.status in TERMINAL:
                raise RunNotActive(
                    f"run {run.id} is already {run.status}; there is nothing to cancel",
                    run_id=str(run.id),
                    status=run.status,
                )
            self._cancel(run, reason, terminate, now, dispatch)
        return dispatch

    def history(self, run_id: str) -> list[Event]:
        if not self._runs().filter(pk=run_id).exists():
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        rows = WorkflowEvent.objects.using(self.using).filter(run__pk=run_id).order_by("seq")
        return [to_event(row) for row in rows]

    # -- sweeping ------------------------------------------------------------

    def fire_due_timers(self, limit: int) -> Dispatch:
        if connections[self.using].vendor == "postgresql":
            return fire_batch(self.using, limit)  # one statement for the whole batch
        dispatch = Dispatch()
        timers = Timer.objects.using(self.using)
        due = timers.filter(fired=False, cancelled=False, fire_at__lte=Now())
        for run_id in list(due.values_list("run_id", flat=True).distinct()[:limit]):
            with self._atomic():
                run, now = self._lock_run(run_id)
                mine = timers.select_for_update(skip_locked=True).filter(
                    run_id=run_id, fired=False, cancelled=False, fire_at__lte=now
                )
                if run.status not in TERMINAL and past_deadline(run, now):
                    continue  # `time_out_runs` ends it and cancels its timers
                firing = list(mine)
                if not firing:
                    continue
                timers.filter(pk__in=[t.pk for t in firing]).update(fired=True)
                if run.status in TERMINAL:
                    continue
                fired = [
                    NewEvent(type=EventType.TIMER_FIRED, command_id=t.command_id) for t in firing
                ]
                self._append(run, fired, now)
                self.sql.update(run, self._wake(run, now, dispatch))
        return dispatch

    def due_runs(self, limit: int, grace_seconds: float) -> Dispatch:
        now = Now()
        with self._atomic():
            ids = list(
                WorkflowRun.objects.using(self.using)
                .runnable()
                .select_for_update(skip_locked=True)
                .filter(next_wakeup_at__lte=now - dt.timedelta(seconds=grace_seconds))
                .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now))
                .values_list("id", flat=True)[:limit]
            )
            self._runs().filter(pk__in=ids).update(next_wakeup_at=now)
        dispatch = Dispatch(runs=[(str(run_id), None) for run_id in ids])
        dispatch.merge(self.hand_off_starts(limit))  # slots freed with nobody to hand them on
        return dispatch
