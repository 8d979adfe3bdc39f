"""A transactional activity on real workers: a worker killed in the middle of the body leaves
no partial rows, and the attempt that follows writes them exactly once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from django.db import connection
from django.db.models.functions import Now

from continuum_django.models import ActivityTask
from tests.testapp import txn
from tests.testapp.models import LedgerEntry

from .helpers import expire_task_leases, outcomes_per_command, wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]

HOLD = 7_340_018  # the advisory lock the body waits for while the test holds it


def waiting_for_hold() -> int | None:
    """The backend (of a worker's body) waiting for the test's advisory lock, if any."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = 0 AND objid = %s",
            [HOLD],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is not None


def test_a_worker_killed_mid_body_leaves_no_rows_and_the_retry_writes_once(
    worker_factory: StartWorker,
) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [HOLD])
    first = worker_factory("first")
    run = txn.booking.start("o-killed", 5, {"hold": HOLD})
    zombie = wait_until(waiting_for_hold, what="the body to wait for the test's lock")
    # The body has written its row and waits, inside the transaction that would journal it.
    assert not LedgerEntry.objects.filter(order="o-killed").exists()
    first.kill()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [HOLD])
    # The dead worker's backend takes the lock, finds its client gone, and rolls back.
    wait_until(lambda: not backend_alive(zombie), what="the dead worker's transaction to end")
    assert not LedgerEntry.objects.filter(order="o-killed").exists()
    task = ActivityTask.objects.get(run_id=run.id)
    assert (task.status, task.attempt, task.result) == ("running", 1, None)
    assert [e.type for e in run.history()] == ["run_started", "activity_scheduled"]

    expire_task_leases(run.id)  # the lease would lapse after LEASE_SECONDS; skip the wait
    worker_factory("second", beat=True)
    # The sweep times the dead attempt out; its retry waits a minute: make it due now.
    wait_until(
        lambda: ActivityTask.objects.filter(pk=task.pk, status="scheduled").exists(),
        what="the sweep to time the dead attempt out",
    )
    ActivityTask.objects.filter(pk=task.pk).update(next_attempt_at=Now() - dt.timedelta(hours=1))
    assert run.result(timeout=60) == {"count": 1}
    assert LedgerEntry.objects.filter(order="o-killed").count() == 1
    assert ActivityTask.objects.get(pk=task.pk).attempt == 2
    assert set(outcomes_per_command(run.id).values()) == {1}


def test_concurrent_transfers_on_real_workers_apply_each_exactly_once(
    worker_factory: StartWorker,
) -> None:
    """Transfers both ways between two rows, on two workers of two processes each: bodies
    lock the rows in opposite orders, so the database may abort some as deadlocks; those
    run again. Every transfer is applied once: the balances say so."""
    a = LedgerEntry.objects.create(order="concurrent", amount=100)
    b = LedgerEntry.objects.create(order="concurrent", amount=100)
    worker_factory("one")
    worker_factory("two")
    runs = [txn.transferring.start(a.pk, b.pk, 10) for _ in range(4)]
    runs += [txn.transferring.start(b.pk, a.pk, 5) for _ in range(4)]
    for run in runs:
        run.result(timeout=90)
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.amount, b.amount) == (100 - 4 * 10 + 4 * 5, 100 + 4 * 10 - 4 * 5)
    for run in runs:
        assert set(outcomes_per_command(run.id).values()) == {1}
