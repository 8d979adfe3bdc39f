"""A claim that waits for a row lock held by a signal's delivery sees that signal.

Postgres re-checks a row that `SELECT ... FOR UPDATE` waited for at its new version, but
the subqueries of the same statement keep the snapshot taken before the wait. A claim's
"has unread signals" probe computed there said no for the very signal that made it wait,
so the run replayed with an empty mailbox, suspended, and cleared its wake-up: the signal
sat unread and nothing woke the run again (a lost wake-up, invariant 4).
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections, transaction

from continuum_django.engine.journal import RunClaim
from continuum_django.journal import OrmJournal
from continuum_django.models import Signal, WorkflowRun
from tests.contract.conftest import OrmHarness
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_claim_blocked_by_a_signal_delivery_takes_the_signal() -> None:
    harness = OrmHarness()
    run_id = harness.start(wf.collector, 1)
    harness.drain()  # waiting for "item", its wake-up cleared
    assert WorkflowRun.objects.get(pk=run_id).next_wakeup_at is None

    claimed: list[RunClaim | None] = []

    def claim() -> None:
        try:
            claimed.append(OrmJournal().claim_run(run_id, "worker-b", 30.0))
        finally:
            connections.close_all()

    with transaction.atomic():  # the delivery holds the run's row lock until it commits
        harness.journal.deliver_signal(run_id, "item", {"n": 1}, None)
        claimer = threading.Thread(target=claim)
        claimer.start()
        _wait_for_lock_waiter()
    claimer.join(30)

    (claim_,) = claimed
    assert claim_ is not None  # the delivery left the run due
    assert [s.name for s in claim_.mailbox] == ["item"]  # and the claim sees its signal
    assert Signal.objects.filter(run_id=run_id, consumed_by__isnull=True).count() == 1


def _wait_for_lock_waiter(timeout: float = 10.0) -> None:
    """Until another session waits on a lock (the claim's SELECT ... FOR UPDATE)."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as probe:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
                if probe.fetchone()[0]:
                    return
                time.sleep(0.01)
    finally:
        other.close()
    raise AssertionError("the claim never waited for the run's row lock")
