"""What every part of the ORM journal shares: row locks on the database clock, appends, wakes."""

from __future__ import annotations

import datetime as dt

from django.db import connections, transaction
from django.db.models.functions import Now

from ..engine.events import Event, EventType, NewEvent
from ..engine.exceptions import LeaseLost, RunNotFound
from ..engine.journal import Dispatch, NewRun, RunClaim
from ..models import ActivityTask, TaskStatus, Timer, WorkflowEvent, WorkflowRun

# Fields a wake-up changes, for save(update_fields=...).
WAKE_FIELDS = ["revision", "next_wakeup_at", "last_seq", "updated_at"]
LEASE_FIELDS = ["lease_owner", "lease_expires_at"]


def to_event(row: WorkflowEvent) -> Event:
    return Event(
        seq=row.seq,
        type=row.type,
        command_id=row.command_id,
        payload=row.payload,
        created_at=row.created_at,
    )


class OrmBase:
    def __init__(self, using: str = "default") -> None:
        self.using = using

    def _atomic(self) -> transaction.Atomic:
        return transaction.atomic(using=self.using)

    def _runs(self):  # type: ignore[no-untyped-def]
        return WorkflowRun.objects.using(self.using)

    def _lock_run(self, run_id: object) -> tuple[WorkflowRun, dt.datetime]:
        """Lock the run's row; also read the database's clock, which decides every deadline."""
        run = self._runs().select_for_update().annotate(db_now=Now()).filter(pk=run_id).first()
        if run is None:
            raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
        return run, run.db_now

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
        rows = [
            WorkflowEvent(
                run_id=run.id,
                seq=run.last_seq + offset,
                type=str(new.type),
                command_id=new.command_id,
                payload=new.payload,
                created_at=now,
            )
            for offset, new in enumerate(events, start=1)
        ]
        WorkflowEvent.objects.using(self.using).bulk_create(rows)
        run.last_seq += len(rows)
        return rows

    def _wake(self, run: WorkflowRun, now: dt.datetime, dispatch: Dispatch) -> list[str]:
        """Mark the run as needing an advance; returns the fields to save."""
        run.revision += 1
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

    def _close_open_work(self, run: WorkflowRun) -> None:
        tasks = ActivityTask.objects.using(self.using).filter(run_id=run.id)
        tasks.filter(status=TaskStatus.SCHEDULED).update(status=TaskStatus.CANCELLED)
        tasks.filter(status=TaskStatus.RUNNING).update(cancel_requested=True)
        Timer.objects.using(self.using).filter(run_id=run.id, fired=False).update(cancelled=True)

    def _insert_run(self, new: NewRun, dispatch: Dispatch) -> WorkflowRun:
        """Insert a run and its run_started event; its first advance goes out on commit."""
        run = self._runs().create(
            id=new.run_id,
            workflow_name=new.workflow_name,
            workflow_version=new.version,
            version_hash=new.version_hash,
            input=new.input,
            namespace=new.namespace,
            attributes=new.attributes,
            idempotency_key=new.idempotency_key,
            parent_run_id=new.parent_run_id,
            parent_command_id=new.parent_command_id,
            continued_from_id=new.continued_from_id,
            chain_root_id=new.chain_root_id or new.run_id,
            next_wakeup_at=Now(),
            last_seq=1,
            revision=1,
        )
        WorkflowEvent.objects.using(self.using).create(
            run=run,
            seq=1,
            type=EventType.RUN_STARTED,
            payload=new.started_payload(),
            created_at=Now(),
        )
        dispatch.runs.append((str(run.id), None))
        return run

    def on_thread_exit(self) -> None:
        connections[self.using].close()
