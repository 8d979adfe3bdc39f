"""Transactional activities on real Postgres: the body's rows and the journaled result commit
together or not at all; aborted transactions are tried again; another database is refused."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import checks
from django.db import connection, connections, transaction
from django.test.utils import override_settings
from django.urls import reverse

from continuum_django import TransactionalActivityError, activity, workflow
from continuum_django.engine.definitions import registry
from continuum_django.engine.journal import ActivityClaim
from continuum_django.journal.activities import TRANSACTION_TRIES
from continuum_django.models import ActivityTask
from tests.contract.conftest import LEASE, OrmHarness
from tests.e2e.helpers import wait_until
from tests.testapp import txn
from tests.testapp.models import LedgerEntry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def harness() -> OrmHarness:
    return OrmHarness()


def order() -> str:
    return f"o-{uuid.uuid4().hex[:8]}"


def rows(name: str) -> int:
    return LedgerEntry.objects.filter(order=name).count()


def test_the_body_rows_and_the_result_commit_together(harness: OrmHarness) -> None:
    name = order()
    run_id = harness.start(txn.booking, name, 5)
    harness.drain()
    assert harness.run(run_id)["result"] == {"count": 1}  # the body saw its own row
    assert rows(name) == 1
    task = ActivityTask.objects.get(run_id=run_id)
    assert (task.status, task.attempt, task.result) == ("completed", 1, 1)
    assert txn.committed.count(name) == 1  # the body's on_commit callback ran, after it


def test_the_admin_marks_a_transactional_activity(harness: OrmHarness, admin_client: Any) -> None:
    run_id = harness.start(txn.booking, order(), 5)
    harness.drain()
    html = admin_client.get(reverse("admin:continuum_workflowrun_change", args=[run_id]))
    text = html.content.decode()
    assert 'class="cn-badge"' in text and ">transactional</span>" in text  # the task's row
    assert "book (transactional)" in text  # its bar in the timeline
    assert "&quot;transactional&quot;: true" in text  # the scheduled event's payload


def test_a_body_that_raises_leaves_no_rows(harness: OrmHarness) -> None:
    name = order()
    run_id = harness.start(txn.booking, name, 5, {"fail": True})
    harness.drain()
    assert txn.tries[name] == 2  # both attempts of the policy wrote a row, and rolled it back
    assert rows(name) == 0
    assert name not in txn.committed  # nor did their on_commit callbacks run
    assert harness.run(run_id)["result"] == {
        "failed": f"activity 'tests.txn.book' failed after 2 attempt(s): builtins.ValueError: "
        f"booking {name} failed after its write"
    }


def test_a_serialization_failure_runs_the_transaction_again(harness: OrmHarness) -> None:
    name = order()
    run_id = harness.start(txn.booking, name, 5, {"conflicts": 2})
    harness.drain()
    assert txn.tries[name] == 3
    assert rows(name) == 1
    assert txn.committed.count(name) == 1
    assert harness.run(run_id)["result"] == {"count": 1}
    assert ActivityTask.objects.get(run_id=run_id).attempt == 1  # within one attempt


def test_a_real_deadlock_runs_the_transaction_again(harness: OrmHarness) -> None:
    """The body locks row A then row B while the test holds B and then asks for A: Postgres
    aborts the body's transaction (it waited first), which is run again and commits."""
    a = LedgerEntry.objects.create(order="deadlock", amount=100)
    b = LedgerEntry.objects.create(order="deadlock", amount=0)
    run_id = harness.start(txn.transferring, a.pk, b.pk, 30)

    failed: list[BaseException] = []

    def work() -> None:
        try:
            harness.drain()
        except BaseException as exc:
            failed.append(exc)
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    with transaction.atomic():
        # The body checks for a deadlock a second after it began to wait, this test's
        # backend only after ten: the body is the one Postgres aborts.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL deadlock_timeout = '10s'")
        LedgerEntry.objects.select_for_update().get(pk=b.pk)
        worker.start()
        wait_until(lambda: lock_waiters() == 1 or failed, what="the body to wait for row B")
        assert not failed, failed
        LedgerEntry.objects.select_for_update().get(pk=a.pk)  # the deadlock: the body loses
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert txn.tries[f"transfer-{a.pk}"] == 2
    assert harness.run(run_id)["result"] == [70, 30]
    amounts = LedgerEntry.objects.filter(order="deadlock").order_by("pk")
    assert list(amounts.values_list("amount", flat=True)) == [70, 30]  # moved exactly once
    assert ActivityTask.objects.get(run_id=run_id).attempt == 1


def lock_waiters() -> int:
    """Other backends of this database waiting for a lock."""
    with connection.cursor() as cursor:
        # Inside a transaction the statistics views keep their first reading: drop it.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_serialization_failures_past_the_bound_fail_the_attempt(harness: OrmHarness) -> None:
    name = order()
    run_id = harness.start(txn.booking, name, 5, {"conflicts": TRANSACTION_TRIES})
    harness.drain()
    assert txn.tries[name] == TRANSACTION_TRIES + 1  # the second attempt's first try held
    assert rows(name) == 1
    assert harness.run(run_id)["result"] == {"count": 1}
    task = ActivityTask.objects.get(run_id=run_id)
    assert task.attempt == 2
    assert "could not serialize" in task.error["message"] or "conflict" in task.error["message"]


def test_an_attempt_that_lost_its_lease_writes_nothing(harness: OrmHarness) -> None:
    """A zombie attempt: the sweeper timed it out and a new attempt holds the task."""
    name = order()
    run_id = harness.start(txn.booking, name, 5)
    harness.runtime.advance_run(harness.sent.runs.pop())
    task_id = harness.sent.activities.pop()
    zombie = harness.journal.claim_activity(task_id, "worker-a", LEASE)
    assert zombie is not None
    harness.expire_task_leases(run_id)
    harness.runtime.sweep()
    harness.make_retries_due()
    harness.sent.activities.clear()
    assert harness.journal.claim_activity(task_id, "worker-b", LEASE) is not None
    with pytest.raises(Exception, match="no longer holds its lease"):
        harness.journal.finish_in_transaction(zombie, lambda: txn.book(name, 5))
    assert name not in txn.tries and rows(name) == 0


@pytest.fixture
def elsewhere() -> Iterator[Any]:
    """A transactional activity on another database, and a workflow that calls it; both
    unregistered afterwards (manage.py check would report it in every other test)."""

    @activity(name="tests.txn.elsewhere", transactional=True, using="archive")
    def archive(note: str) -> str:
        raise AssertionError("the body of a refused activity ran")

    @workflow(name="tests.txn.archiving")
    def archiving(ctx: Any) -> Any:
        try:
            return ctx.activity(archive, "x")
        except Exception as exc:
            return {"failed": str(exc)}

    yield archiving
    registry.activities.pop("tests.txn.elsewhere")
    registry.workflows.pop(("tests.txn.archiving", 1))


def test_another_database_is_refused_at_run_time(harness: OrmHarness, elsewhere: Any) -> None:
    run_id = harness.start(elsewhere)
    harness.drain()
    failed = harness.run(run_id)["result"]["failed"]
    assert "after 1 attempt(s)" in failed  # not retried: a configuration error
    assert "TransactionalActivityError" in failed
    assert "transactional on database 'archive', but the journal is on 'default'" in failed
    task = ActivityTask.objects.get(run_id=run_id)
    with pytest.raises(TransactionalActivityError, match="journal is on 'default'"):
        harness.journal.finish_in_transaction(ActivityClaim.of(task), lambda: 1, using="archive")


def test_another_database_is_reported_by_the_system_check(elsewhere: Any) -> None:
    found = [m for m in checks.run_checks(tags=["continuum"]) if m.id == "continuum.E030"]
    assert [m.obj for m in found] == [f"{__name__}.elsewhere.<locals>.archive"]
    assert "transactional on database 'archive'" in found[0].msg
    with override_settings(CONTINUUM={"DATABASE": "archive"}):
        found = [m for m in checks.run_checks(tags=["continuum"]) if m.id.endswith("030")]
    # On 'archive' it is fine; the testapp's activities that declare no database are not.
    assert {m.id for m in found} == {"continuum.W030"}
    assert f"{txn.__name__}.book" in {m.obj for m in found}
