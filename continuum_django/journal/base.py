"""What every part of the ORM journal shares: row locks on the database clock, appends, wakes."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from functools import cached_property
from typing import Any, NamedTuple

from django.db import connections, transaction
from django.db.models.functions import Now

from ..conf import app_settings
from ..engine.context import BufferedSignal
from ..engine.events import Event, EventType, NewEvent
from ..engine.exceptions import LeaseLost, RunNotFound
from ..engine.journal import ActivityClaim, Dispatch, NewRun, RunClaim
from ..models import (
    TERMINAL,
    ActivityTask,
    FlowState,
    RunStatus,
    Signal,
    TaskStatus,
    Timer,
    WorkflowEvent,
    WorkflowRun,
)
from . import internals
from .lean import statements

EVENT_COLUMNS = ["seq", "type", "command_id", "payload", "created_at"]
RUN_ENDED = "continuum_run_ended"  # NOTIFY channel; the payload is `runs.end_notice`'s

# Columns the step path never reads: a locked run leaves them behind (they load on access).
COLD_RUN_COLUMNS = (
    "input", "result", "error", "attributes", "published_state", "version_hash", "namespace",
    "idempotency_key", "park_detail", "continued_from_id", "created_at", "updated_at",
    "finished_at",
)  # fmt: skip

# What the rest of an optimistic write reads of the run row it wrote (the rest is deferred).
WRITTEN_RUN_COLUMNS = (
    "id", "status", "revision", "last_seq", "lease_token", "park_reason", "cancel_requested",
    "parent_run_id", "parent_command_id", "chain_root_id", "workflow_name", "workflow_version",
)  # fmt: skip

# Fields a wake-up changes, for save(update_fields=...).
WAKE_FIELDS = ["revision", "next_wakeup_at", "last_seq", "updated_at"]
LEASE_FIELDS = ["lease_owner", "lease_expires_at"]


LEASED_TASK_FIELDS = [
    "status", "attempt", "lease_token", "lease_owner", "lease_expires_at",
    "attempt_deadline", "heartbeat_deadline", "updated_at",
]  # fmt: skip


def start_columns(new: NewRun) -> dict[str, Any]:
    """The columns of a run with start limits (``new.flow``): inserted waiting for a slot
    (no wake-up; see `StartFlow.admit_start`), unless it continues a run that held one."""
    flow = new.flow
    if flow is None:
        return {}
    columns: dict[str, Any] = {
        "flow": {"concurrency": flow["concurrency"]},
        "flow_key": flow.get("key", ""),
        "priority": flow.get("priority", 0),
    }
    if new.continued_from_id is None:
        columns.update(flow_state=FlowState.SLOT, next_wakeup_at=None)
    return columns


def activity_claim(task: ActivityTask, reason: str = "") -> ActivityClaim:
    return ActivityClaim.of(task, reason)


def to_event(row: WorkflowEvent) -> Event:
    return Event(
        seq=row.seq,
        type=row.type,
        command_id=row.command_id,
        payload=row.payload,
        created_at=row.created_at,
    )


def past_deadline(run: WorkflowRun, now: dt.datetime) -> bool:
    """Whether the run's deadline has passed at ``now``: it advances no more, and the
    sweep ends it (`RunJournal.time_out_runs`)."""
    return run.deadline is not None and run.deadline <= now


class LooseEnds(NamedTuple):
    scheduled: bool  # activity tasks not started yet
    running: bool  # activity attempts under way
    timers: bool  # timers not fired yet
    children: bool  # child runs not ended yet


class OrmBase:
    # Histories kept per worker process: events are append-only, so a cached prefix stays
    # true and a claim loads only the events after it.
    HISTORY_CACHE_RUNS = 256

    def __init__(self, using: str = "default", max_unread_signals: int | None = None) -> None:
        self.using = using
        self._max_unread_signals = max_unread_signals
        self.sql = statements(using)
        self._histories: OrderedDict[str, list[Event]] = OrderedDict()

    def _history(
        self, run_id: str, last_seq: int, appended: list[Event] | None = None
    ) -> list[Event]:
        """The run's events up to ``last_seq``, reading only those this process has not seen.

        Called inside the claiming transaction, which may itself have appended events (due
        timers): the cache takes the result only once that transaction has committed, so
        it never holds an event that was rolled back.
        """
        cached = self._histories.get(run_id) or []
        if len(cached) > last_seq or (cached and cached[-1].seq != len(cached)):
            cached = []
        history = list(cached)
        if appended and appended[0].seq == len(history) + 1 and appended[-1].seq == last_seq:
            history.extend(appended)  # what this transaction just wrote: no need to read it
        if len(history) < last_seq:
            rows = self.sql.rows(
                WorkflowEvent,
                EVENT_COLUMNS,
                [("run_id", "="), ("seq", ">"), ("seq", "<=")],
                [run_id, len(history), last_seq],
                order_by="seq",
            )
            history.extend(
                Event(seq=seq, type=type_, command_id=command, payload=payload, created_at=at)
                for seq, type_, command, payload, at in rows
            )
        transaction.on_commit(lambda: self._keep(run_id, history), using=self.using)
        return history

    def _keep(self, run_id: str, history: list[Event]) -> None:
        self._histories.pop(run_id, None)
        self._histories[run_id] = history
        while len(self._histories) > self.HISTORY_CACHE_RUNS:
            self._histories.popitem(last=False)

    def _remember(self, run_id: str, rows: list[WorkflowEvent]) -> None:
        """Add events this transaction appends to the cached history, once it commits."""
        events = [to_event(row) for row in rows]

        def keep() -> None:
            cached = self._histories.get(run_id)
            if cached is not None and events and len(cached) + 1 == events[0].seq:
                cached.extend(events)

        if events:
            transaction.on_commit(keep, using=self.using)

    def max_unread_signals(self) -> int | None:
        """How many unread signals a run's mailbox may hold (None: no limit): as given, or
        ``CONTINUUM["MAX_UNREAD_SIGNALS"]``. A claim loads them all, so this bounds it."""
        if self._max_unread_signals is not None:
            return self._max_unread_signals
        limit: int | None = app_settings().MAX_UNREAD_SIGNALS
        return limit

    def _atomic(self) -> transaction.Atomic:
        return transaction.atomic(using=self.using)

    def _runs(self):  # type: ignore[no-untyped-def]
        return WorkflowRun.objects.using(self.using)

    def _lock_run(
        self, run_id: object, for_update: bool = True, flags: bool = False
    ) -> tuple[WorkflowRun, dt.datetime]:
        """Lock the run's row; also read the database's clock, which decides every deadline.

        With ``flags`` (for a claim), whether the mailbox holds unread signals (``unread``)
        and whether a timer is due (``due_timers``) come with the lock: a claim reads the
        mailbox or the timers only then. Without, those subqueries (most of the lock's cost
        in the database) are left out and ``unread`` reads as unknown. The payload columns
        that writers never read stay behind (`COLD_RUN_COLUMNS`: they load on access).
        """
        exists = None
        if flags:
            exists = {"unread": self._unread_sql, "due_timers": self._due_timers_sql}
        locked = self.sql.lock(
            WorkflowRun,
            run_id,
            defer=COLD_RUN_COLUMNS,
            exists=exists,
            for_update=for_update,
        )
        if locked is None:
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        run, now = locked
        run.db_now = now  # type: ignore[attr-defined]
        return run, now

    @cached_property
    def _unread_sql(self) -> str:
        quote = internals.quoter(connections[self.using])
        return (
            f"SELECT 1 FROM {quote(Signal._meta.db_table)} s WHERE s.{quote('run_id')} = "
            f"{{table}}.{quote('id')} AND s.{quote('consumed_by_id')} IS NULL"
        )

    @cached_property
    def _due_timers_sql(self) -> str:
        quote = internals.quoter(connections[self.using])
        return (
            f"SELECT 1 FROM {quote(Timer._meta.db_table)} t WHERE t.{quote('run_id')} = "
            f"{{table}}.{quote('id')} AND NOT t.{quote('fired')} AND NOT t.{quote('cancelled')}"
            f" AND t.{quote('fire_at')} <= {{now}}"
        )

    def _tip_id(self, run_id: object) -> str:
        """The live end of the run's continue_as_new chain (the run itself when none)."""
        current = str(run_id)
        while nxt := self._runs().filter(continued_from_id=current).values_list("id").first():
            current = str(nxt[0])
        if not self._runs().filter(pk=current).exists():
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        return current

    def _append(
        self, run: WorkflowRun, events: list[NewEvent], now: dt.datetime
    ) -> list[WorkflowEvent]:
        rows = self._rows(run, events, now)
        self._insert_events(rows)
        return rows

    def _insert_events(self, rows: list[WorkflowEvent]) -> None:
        """Insert events; only a received signal's row needs its id back (the signal points
        at it), so the others are not read back, which lets a pipeline carry on."""
        self.sql.insert(rows, returning=any(r.type == EventType.SIGNAL_RECEIVED for r in rows))

    def _rows(
        self, run: WorkflowRun, events: list[NewEvent], now: dt.datetime
    ) -> list[WorkflowEvent]:
        """The rows that append ``events`` to the run's history (the caller inserts them)."""
        rows = [
            self.sql.new(
                WorkflowEvent,
                run_id=run.id,
                seq=run.last_seq + offset,
                type=str(new.type),
                command_id=new.command_id,
                payload=new.payload,
                created_at=now,
            )
            for offset, new in enumerate(events, start=1)
        ]
        run.last_seq += len(rows)
        return rows

    def _wake(self, run: WorkflowRun, now: dt.datetime, dispatch: Dispatch) -> list[str]:
        """Mark the run as needing an advance; returns the fields to save. A run waiting
        for a start slot only notes the change, until it is granted one (or is cancelled:
        it then ends without one)."""
        run.revision += 1
        if run.__dict__.get("flow_state") == FlowState.SLOT and not run.cancel_requested:
            return WAKE_FIELDS
        if run.next_wakeup_at is None or run.next_wakeup_at > now:
            run.next_wakeup_at = now
        dispatch.runs.append((str(run.id), None))
        return WAKE_FIELDS

    def _check_lease(self, run: WorkflowRun, claim: RunClaim, now: dt.datetime) -> None:
        if (
            run.lease_token != claim.token
            or run.lease_expires_at is None
            or run.lease_expires_at <= now
        ):
            raise LeaseLost(
                f"lease {claim.token} on run {run.id} is no longer held", run_id=str(run.id)
            )

    def _loose_ends(self, run: WorkflowRun, notice: str | None = None) -> LooseEnds:
        """What an ending or cancelled run leaves open, in one round trip (usually nothing).
        With ``notice``, the same statement announces the end on Postgres (NOTIFY
        `RUN_ENDED`, heard once the transaction commits)."""
        connection = connections[self.using]
        quote = internals.quoter(connection)
        run_id = self.sql.prep(WorkflowRun, "pk", run.id)
        tasks, timers = quote(ActivityTask._meta.db_table), quote(Timer._meta.db_table)
        runs = quote(WorkflowRun._meta.db_table)
        live = ", ".join(["%s"] * len(TERMINAL))
        sql = (
            f"SELECT EXISTS (SELECT 1 FROM {tasks} WHERE run_id = %s AND status = %s),"
            f" EXISTS (SELECT 1 FROM {tasks} WHERE run_id = %s AND status = %s),"
            f" EXISTS (SELECT 1 FROM {timers} WHERE run_id = %s AND NOT fired),"
            f" EXISTS (SELECT 1 FROM {runs} WHERE parent_run_id = %s AND status NOT IN ({live}))"
        )
        params = [run_id, TaskStatus.SCHEDULED, run_id, TaskStatus.RUNNING, run_id, run_id]
        params.extend(TERMINAL)
        if notice is not None and connection.vendor == "postgresql":
            sql += ", pg_notify(%s, %s) IS NULL"
            params += [RUN_ENDED, notice]
        row = self.sql.fetchone(sql, params)
        return LooseEnds(*(bool(flag) for flag in row[:4]))

    def _close_open_work(self, run: WorkflowRun, ends: LooseEnds | None = None) -> None:
        ends = ends or self._loose_ends(run)
        if ends.scheduled or ends.running:
            tasks = ActivityTask.objects.using(self.using).filter(run_id=run.id)
            if ends.scheduled:
                tasks.filter(status=TaskStatus.SCHEDULED).update(status=TaskStatus.CANCELLED)
            if ends.running:
                tasks.filter(status=TaskStatus.RUNNING).update(cancel_requested=True)
        if ends.timers:
            timers = Timer.objects.using(self.using).filter(run_id=run.id, fired=False)
            timers.update(cancelled=True)

    def _insert_run(
        self, new: NewRun, dispatch: Dispatch, now: dt.datetime | None = None
    ) -> WorkflowRun:
        """Insert a run and its run_started event; its first advance goes out on commit.
        A ``timeout`` makes its deadline from ``now``, the database's clock (without one,
        the caller sets the deadline: see `RunJournal.create_run`)."""
        columns: dict[str, Any] = {"next_wakeup_at": Now(), **start_columns(new)}
        run = self.sql.new(
            WorkflowRun,
            id=new.run_id,
            workflow_name=new.workflow_name,
            workflow_version=new.version,
            version_hash=new.version_hash,
            input=new.input,
            namespace=new.namespace,
            attributes=new.attributes,
            published_state=new.state,
            idempotency_key=new.idempotency_key,
            parent_run_id=new.parent_run_id,
            parent_command_id=new.parent_command_id,
            continued_from_id=new.continued_from_id,
            chain_root_id=new.chain_root_id or new.run_id,
            deadline=new.deadline if now is None else new.deadline_at(now),
            last_seq=1,
            revision=1,
            **columns,
        )
        started = self.sql.new(
            WorkflowEvent,
            run_id=run.id,
            seq=1,
            type=EventType.RUN_STARTED,
            payload=new.started_payload(),
            created_at=Now(),
        )
        self.sql.insert_together([run], [started])  # one statement, when it commits alone
        if run.next_wakeup_at is not None:  # else it waits for a start slot
            dispatch.runs.append((str(run.id), None))
        return run

    def _lease_run(
        self,
        run: WorkflowRun,
        owner: str,
        lease_seconds: float,
        now: dt.datetime,
        appended: list[Event] | None = None,
    ) -> RunClaim:
        run.lease_token += 1
        run.lease_owner = owner
        run.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
        run.status = RunStatus.RUNNING
        claimed = ["lease_token", "status", "last_seq", "revision", "next_wakeup_at"]
        self.sql.update(run, [*claimed, *LEASE_FIELDS, "updated_at"])  # with any wake-up
        return self._claim_of(run, now, appended)

    def _unchanged(self, run: WorkflowRun, claim: RunClaim, now: dt.datetime) -> bool:
        """Whether an optimistic ``claim`` still describes the (locked) run: same revision,
        nobody holding its lease, not parked, not ended, not past its deadline."""
        return (
            run.revision == claim.revision
            and (run.lease_expires_at is None or run.lease_expires_at <= now)
            and not run.park_reason
            and run.status not in TERMINAL
            and not past_deadline(run, now)
        )

    def _claim_of(
        self,
        run: WorkflowRun,
        now: dt.datetime,
        appended: list[Event] | None = None,
        optimistic: bool = False,
    ) -> RunClaim:
        mailbox = []
        if getattr(run, "unread", True):  # all of them: `max_unread_signals` bounds it
            signals = Signal.objects.using(self.using).filter(
                run_id=run.id, consumed_by__isnull=True
            )
            mailbox = [
                BufferedSignal(id=pk, name=name, payload=payload)
                for pk, name, payload in signals.order_by("id").values_list("id", "name", "payload")
            ]
        return RunClaim(
            run_id=str(run.id),
            token=run.lease_token,
            revision=run.revision,
            parent_run_id=str(run.parent_run_id) if run.parent_run_id else None,
            workflow_name=run.workflow_name,
            version=run.workflow_version,
            history=self._history(str(run.id), run.last_seq, appended),
            mailbox=mailbox,
            now=now,
            optimistic=optimistic,
        )

    def on_thread_exit(self) -> None:
        connections[self.using].close()
