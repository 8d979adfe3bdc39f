"""The step path's compiled statements write and read what the ORM would (Postgres; CI also
runs this on SQLite), and a guard that fails changes nothing."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from continuum_django.journal.lean import Statements
from continuum_django.models import ActivityTask, WorkflowEvent, WorkflowRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def sql() -> Statements:
    return Statements("default")


def new_run(**fields: object) -> WorkflowRun:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "workflow_name": "tests.lean",
        "input": {"args": [1, "two"], "when": "2026-01-01"},
        "attributes": {"customer": "c-1"},
        "next_wakeup_at": Now(),
    }
    return WorkflowRun(**(values | fields))


def test_insert_stores_what_the_orm_reads_back(sql: Statements) -> None:
    before = timezone.now() - dt.timedelta(minutes=5)  # the database's clock may differ a bit
    run = new_run()
    sql.insert([run])
    stored = WorkflowRun.objects.get(pk=run.id)
    assert stored.input == {"args": [1, "two"], "when": "2026-01-01"}
    assert stored.attributes == {"customer": "c-1"}
    assert stored.next_wakeup_at is not None and stored.next_wakeup_at > before  # Now()
    assert stored.created_at is not None and stored.status == "pending"  # defaults, auto_now_add

    events = [
        WorkflowEvent(run=run, seq=n, type="marker", payload={"n": n}, created_at=Now())
        for n in (1, 2)
    ]
    sql.insert(events)
    assert all(event.pk is not None for event in events)  # auto keys come back, in order
    by_pk = {e.pk: e.payload for e in WorkflowEvent.objects.filter(run_id=run.id)}
    assert by_pk == {events[0].pk: {"n": 1}, events[1].pk: {"n": 2}}


def test_lock_reads_the_row_with_the_database_clock_and_defers_cold_columns(
    sql: Statements,
) -> None:
    run = new_run()
    sql.insert([run])
    with transaction.atomic():
        locked = sql.lock(WorkflowRun, run.id, defer=("input",), exists={"yes": "SELECT 1"})
    assert locked is not None
    row, now = locked
    assert isinstance(now, dt.datetime) and now.tzinfo is not None
    assert str(row.pk) == run.id and row.attributes == {"customer": "c-1"}
    assert row.yes is True  # type: ignore[attr-defined]
    assert "input" in row.get_deferred_fields()
    assert row.input == {"args": [1, "two"], "when": "2026-01-01"}  # loads on access
    assert sql.lock(WorkflowRun, uuid.uuid4()) is None


def test_update_writes_only_the_named_fields_and_honours_its_guard(sql: Statements) -> None:
    run = new_run()
    sql.insert([run])
    stale = WorkflowRun.objects.get(pk=run.id)
    stale.revision, stale.attributes, stale.namespace = 5, {"changed": True}, "elsewhere"
    assert sql.update(stale, ["revision", "attributes"]) == 1
    stored = WorkflowRun.objects.get(pk=run.id)
    assert (stored.revision, stored.attributes, stored.namespace) == (
        5, {"changed": True}, "default",
    )  # fmt: skip

    stale.revision = 9
    assert sql.update(stale, ["revision"], "revision = %s", [("revision", 4)]) == 0
    assert WorkflowRun.objects.get(pk=run.id).revision == 5  # the guard failed: unchanged


def test_update_returning_writes_and_reads_back_in_one_statement(sql: Statements) -> None:
    run = new_run(revision=3)
    sql.insert([run])
    change = WorkflowRun(id=run.id, revision=4, status="completed", finished_at=Now())
    fields = ["revision", "status", "finished_at"]
    with transaction.atomic():
        missed = sql.update_returning(
            change, fields, "revision = %s", [("revision", 2)], ["id", "revision"]
        )
    assert missed is None
    assert WorkflowRun.objects.get(pk=run.id).status == "pending"  # nothing written

    with transaction.atomic():
        written = sql.update_returning(
            change,
            fields,
            "revision = %s AND created_at <= {now}",
            [("revision", 3)],
            ["id", "revision", "status", "finished_at"],
        )
    assert written is not None
    row, now = written
    assert (row.revision, row.status, row.finished_at) == (4, "completed", now)
    assert "attributes" in row.get_deferred_fields()
    assert row.attributes == {"customer": "c-1"}  # loads on access, as stored
    stored = WorkflowRun.objects.get(pk=run.id)
    assert (stored.revision, stored.status, stored.finished_at) == (4, "completed", now)


def test_rows_filters_orders_and_converts(sql: Statements) -> None:
    run = new_run()
    sql.insert([run])
    at = timezone.now()
    sql.insert(
        [
            WorkflowEvent(run=run, seq=n, type=f"e{n}", payload={"n": n}, created_at=at)
            for n in (3, 1, 2, 4)
        ]
    )
    rows = sql.rows(
        WorkflowEvent,
        ["seq", "type", "payload", "created_at"],
        [("run_id", "="), ("seq", ">"), ("seq", "<=")],
        [run.id, 1, 3],
        order_by="seq",
    )
    assert rows == [[2, "e2", {"n": 2}, at], [3, "e3", {"n": 3}, at]]
    task = ActivityTask(
        run=run, command_id="0:activity:x", activity="x", queue="q", next_attempt_at=at
    )
    sql.insert([task])
    assert ActivityTask.objects.get(pk=task.pk).args == []  # a JSON default
