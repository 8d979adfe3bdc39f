"""Flow control of workflow starts: at most N live runs per (workflow, key), admitted in order.

A run of a workflow declared with ``concurrency`` (``WorkflowRun.flow``) is inserted
waiting (``flow_state="slot"``, no wake-up, no message), then admitted in the same
transaction under a transaction-scoped lock on its (workflow, key), the lock the activity
flow code takes (`FlowJournal._lock_key`), on a key of its own: the live runs of the key
are counted (not ended and not waiting) and the free slots go to the best waiting runs,
highest priority first, then oldest. A run granted a slot is woken like any other (its
first advance goes out when the transaction commits); the others wait, visible, without a
message and without polling.

When a run with limits ends (completed, failed, cancelled, timed out: `RunJournal._end`),
the ending transaction hands the freed slot on the same way. The sweep is the backstop: it
hands on slots that nobody did (`hand_off_starts`). A run continued as new hands its slot
to its successor (no admission: the chain holds one slot), and a waiting run that is
cancelled is woken to end, without taking a slot.

Runs without limits take none of these statements: every test here is on columns already
read, or on the run's ``run_started`` payload.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.db.models.functions import Now

from ..engine.journal import Dispatch, NewRun, RunClaim
from ..models import TERMINAL, FlowState, RunStatus, WorkflowRun
from .base import OrmBase

# The first key of the two-int advisory locks on a workflow's start key ("wflw" in ASCII;
# the activities' is "flow", so a workflow and an activity of one name never share a lock).
START_LOCK = int.from_bytes(b"wflw", "big")


def start_limits(claim: RunClaim) -> dict[str, Any] | None:
    """The start limits of the claimed run, from its ``run_started`` payload (None: none)."""
    first = claim.history[0] if claim.history else None
    return (first.payload or {}).get("flow") if first is not None else None


def waits_for_slot(run: WorkflowRun) -> bool:
    """Whether ``run`` waits for a start slot. Read from the row's loaded columns only: a
    run written by an optimistic UPDATE has ``flow_state`` deferred, and loading it would
    cost a query (such a run never waits: it was advanced)."""
    return run.__dict__.get("flow_state") == FlowState.SLOT


class StartFlow(OrmBase):
    """Admission of runs with start limits, and the hand-off of their slots."""

    def admit_start(self, new: NewRun, dispatch: Dispatch) -> None:
        """Admit the run ``new`` just inserted waiting, in its transaction: it (or a run that
        outranks it) takes a free slot of its key, if there is one."""
        assert new.flow is not None
        dispatch.starts.pop(new.run_id, None)  # a granted run's advance reads it
        dispatch.merge(self.hand_off_start(new.workflow_name, new.flow.get("key", "")))

    def hand_off_start(self, workflow: str, key: str) -> Dispatch:
        """Grant the free slots of (``workflow``, ``key``) to the best runs waiting for one;
        their first advances go out on commit."""
        self._lock_start_key(workflow, key)
        waiting = self._runs_of(workflow, key).filter(flow_state=FlowState.SLOT)
        first = waiting.order_by("-priority", "created_at").values_list("flow", flat=True).first()
        if not first:
            return Dispatch()
        live = self._runs_of(workflow, key).filter(flow_state=FlowState.NONE).count()
        free = int(first["concurrency"]) - live
        if free <= 0:
            return Dispatch()
        chosen = list(
            waiting.order_by("-priority", "created_at", "id")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:free]
        )
        WorkflowRun.objects.using(self.using).filter(pk__in=chosen).update(
            flow_state=FlowState.NONE, next_wakeup_at=Now(), updated_at=Now()
        )
        return Dispatch(runs=[(str(run_id), None) for run_id in chosen])

    def hand_off_starts(self, limit: int) -> Dispatch:
        """The sweep's backstop: hand on the slots of keys with runs waiting for one."""
        dispatch = Dispatch()
        keys = (
            self._runs_waiting()
            .order_by()
            .values_list("workflow_name", "flow_key")
            .distinct()[:limit]
        )
        for workflow, key in list(keys):
            with self._atomic():
                dispatch.merge(self.hand_off_start(workflow, key))
        return dispatch

    # -- helpers -------------------------------------------------------------

    def _runs_waiting(self) -> QuerySet[WorkflowRun]:
        """Runs waiting for a start slot (live: the `continuum_run_flow` index's condition)."""
        return (
            WorkflowRun.objects.using(self.using)
            .filter(flow__isnull=False, flow_state=FlowState.SLOT, status=RunStatus.PENDING)
            .exclude(status__in=TERMINAL)
        )

    def _runs_of(self, workflow: str, key: str) -> QuerySet[WorkflowRun]:
        """The live runs with limits of (``workflow``, ``key``) (the `continuum_run_flow`
        index's rows)."""
        return (
            WorkflowRun.objects.using(self.using)
            .filter(workflow_name=workflow, flow_key=key, flow__isnull=False)
            .exclude(status__in=TERMINAL)
        )

    def _lock_start_key(self, workflow: str, key: str) -> None:
        """Serialise admissions and hand-offs of one (workflow, key) until the transaction
        ends (a Postgres advisory lock; other databases serialise writes already)."""
        connection = connections[self.using]
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                [START_LOCK, json.dumps([workflow, key])],
            )
