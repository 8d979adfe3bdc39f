"""The step path's compiled statements write and read what the ORM would (Postgres; CI also
runs this on SQLite), a guard that fails changes nothing, and a pipelined transaction
behaves as an atomic block."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Now
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from continuum_django.engine import codec
from continuum_django.journal.lean import (
    STATEMENT_CLOCK,
    AttemptLost,
    Guarded,
    Insert,
    Statements,
)
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


def new_task(run: WorkflowRun, name: str) -> ActivityTask:
    return ActivityTask(
        run=run, command_id=f"0:activity:{name}", activity=name, queue="q", next_attempt_at=Now()
    )


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
        ).fetch()
    assert missed is None
    assert WorkflowRun.objects.get(pk=run.id).status == "pending"  # nothing written

    with transaction.atomic():
        written = sql.update_returning(
            change,
            fields,
            "revision = %s AND created_at <= {now}",
            [("revision", 3)],
            ["id", "revision", "status", "finished_at"],
        ).fetch()
    assert written is not None
    row, now = written
    # The clock comes back as the instant the statement stored, to the microsecond (on
    # Postgres it is read as an integer, the column as a timestamp).
    assert (row.revision, row.status, row.finished_at) == (4, "completed", now)
    assert now.utcoffset() == dt.timedelta(0)
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


def _pipelined() -> bool:
    """Whether this connection is in psycopg's pipeline mode right now."""
    raw = connection.connection
    return connection.vendor == "postgresql" and bool(raw.pgconn.pipeline_status)


@pytest.mark.django_db(transaction=True)
def test_a_transaction_commits_its_statements_then_runs_on_commit_callbacks(
    sql: Statements,
) -> None:
    run, heard, engaged = new_run(), [], []
    with sql.transaction():
        engaged.append(_pipelined())
        sql.insert([run])
        sent = sql.update_returning(
            WorkflowRun(id=run.id, revision=7), ["revision"], "", [], ["revision"]
        )
        sql.insert([WorkflowEvent(run=run, seq=1, type="marker", created_at=Now())], False)
        transaction.on_commit(lambda: heard.append(WorkflowRun.objects.get(pk=run.id).revision))
        written = sent.fetch()
        assert written is not None and written[0].revision == 7
    assert engaged == [connection.vendor == "postgresql"]  # pipelined on Postgres only
    assert heard == [7]  # after the commit, which the callback's own read can see
    assert WorkflowEvent.objects.filter(run_id=run.id).count() == 1
    assert connection.get_autocommit() and not _pipelined()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failure", ["raised", "statement"])
def test_a_transaction_that_fails_writes_nothing_and_leaves_the_connection_usable(
    sql: Statements, failure: str
) -> None:
    kept = new_run()
    sql.insert([kept])
    run, heard = new_run(), []
    with pytest.raises((ValueError, IntegrityError)), sql.transaction():
        sql.insert([run])
        transaction.on_commit(lambda: heard.append("committed"))
        if failure == "raised":
            raise ValueError("the step failed")
        sql.insert([new_run(id=kept.id)], False)  # a duplicate key, found at the commit
        sql.update(WorkflowRun(id=run.id, revision=3), ["revision"])
    assert heard == []
    assert not WorkflowRun.objects.filter(pk=run.id).exists()
    assert connection.get_autocommit() and not _pipelined()
    with sql.transaction():  # the next transaction works as usual
        sql.update(WorkflowRun(id=kept.id, revision=5), ["revision"])
    assert WorkflowRun.objects.get(pk=kept.id).revision == 5


@pytest.mark.django_db(transaction=True)
def test_keys_read_with_then_come_after_a_pipelined_commit(sql: Statements) -> None:
    run = new_run()
    sql.insert([run])
    tasks = [new_task(run, "first"), new_task(run, "second")]
    known: list[list[int | None]] = []
    with sql.transaction():
        sql.insert(tasks, then=lambda: known.append([t.pk for t in tasks]))
        inside = list(known)
    # Pipelined, the keys are read with the COMMIT's answer; otherwise at once.
    assert inside == ([] if connection.vendor == "postgresql" else known)
    stored = sorted(ActivityTask.objects.filter(run_id=run.id).values_list("pk", flat=True))
    assert len(known) == 1 and sorted(known[0]) == stored  # type: ignore[type-var]

    called: list[str] = []
    with pytest.raises(ValueError), sql.transaction():
        sql.insert([new_task(run, "third")], then=lambda: called.append("keys"))
        raise ValueError("the step failed")
    assert called == ([] if connection.vendor == "postgresql" else ["keys"])
    assert ActivityTask.objects.filter(run_id=run.id).count() == 2


@pytest.mark.django_db(transaction=True)
def test_inside_an_outer_transaction_it_is_a_plain_atomic_block(sql: Statements) -> None:
    run, inner = new_run(), new_run()
    with transaction.atomic():
        sql.insert([run])
        with pytest.raises(ValueError), sql.transaction():
            assert not _pipelined()
            sql.insert([inner])
            raise ValueError("only the inner block rolls back")
        sql.update(WorkflowRun(id=run.id, revision=2), ["revision"])
    assert WorkflowRun.objects.get(pk=run.id).revision == 2
    assert not WorkflowRun.objects.filter(pk=inner.id).exists()


def test_a_partial_instance_writes_its_columns_and_refuses_an_unloaded_one(
    sql: Statements,
) -> None:
    run = new_run()
    sql.insert([run])
    partial = sql.partial(WorkflowRun, id=run.id, revision=9, last_seq=4)
    assert partial.get_deferred_fields() >= {"status", "input", "attributes"}
    sql.update(partial, ["last_seq", "revision"])  # given in another order than the model's
    stored = WorkflowRun.objects.get(pk=run.id)
    assert (stored.revision, stored.last_seq, stored.input) == (9, 4, run.input)

    with pytest.raises(ValueError, match=r"WorkflowRun\.status is written but not loaded"):
        sql.update(partial, ["status"])
    with pytest.raises(LookupError, match="no column 'colour'"):
        sql.partial(WorkflowRun, id=run.id, colour="red")
    assert WorkflowRun.objects.get(pk=run.id).status == stored.status  # nothing written


def test_a_new_instance_is_the_one_the_orm_would_build(sql: Statements) -> None:
    run = new_run()
    sql.insert([run])
    fields = {
        "run_id": run.id, "command_id": "0:activity:a", "activity": "a", "queue": "q",
        "next_attempt_at": timezone.now(),
    }  # fmt: skip
    built, expected = sql.new(ActivityTask, **fields), ActivityTask(**fields)
    assert {k: v for k, v in built.__dict__.items() if k != "_state"} == {
        k: v for k, v in expected.__dict__.items() if k != "_state"
    }  # every column, defaults included (a callable default, a blank CharField, an auto id)
    assert (built._state.adding, built._state.db) == (True, None)
    sql.insert([built])
    stored = ActivityTask.objects.get(pk=built.pk)
    assert (stored.status, stored.attempt, stored.args) == ("scheduled", 0, [])
    with pytest.raises(LookupError, match="no column 'run'"):
        sql.new(ActivityTask, run=run)  # columns by attname only


def test_init_signals_are_heard_when_something_listens(sql: Statements) -> None:
    heard: list[tuple[str, str]] = []

    def listen(sender: type[Any], instance: Any, **kwargs: Any) -> None:
        heard.append((sender.__name__, instance.__dict__.get("workflow_name", "")))

    run = new_run()
    sql.insert([run])
    post_init.connect(listen, sender=WorkflowRun)
    try:
        sql.partial(WorkflowRun, id=run.id, workflow_name="tests.partial")
        sql.new(WorkflowRun, id=run.id, workflow_name="tests.new")
        with transaction.atomic():
            locked = sql.lock(WorkflowRun, run.id)
    finally:
        post_init.disconnect(listen, sender=WorkflowRun)
    assert locked is not None and locked[0].workflow_name == "tests.lean"
    assert heard == [
        ("WorkflowRun", "tests.partial"),
        ("WorkflowRun", "tests.new"),
        ("WorkflowRun", "tests.lean"),
    ]  # fmt: skip
    sql.partial(WorkflowRun, id=run.id)
    assert len(heard) == 3  # nothing listens any more: the quick path, no signal


@pytest.mark.django_db(transaction=True)
def test_pipelining_can_be_turned_off(sql: Statements, settings: Any) -> None:
    settings.CONTINUUM = {**settings.CONTINUUM, "PIPELINE": False}
    run = new_run()
    with sql.transaction():
        assert not _pipelined()
        sql.insert([run])
    assert WorkflowRun.objects.filter(pk=run.id).exists()


def _step_rows(
    sql: Statements, revision: int = 3, token: int = 1
) -> tuple[WorkflowRun, ActivityTask, Guarded[WorkflowRun], Guarded[ActivityTask], list[Insert]]:
    """A stored run and its running attempt; a step that writes both (guarded by
    ``revision`` and ``token``), appends an event and schedules a task on the clock."""
    run = new_run(revision=3)
    sql.insert([run])
    attempt = new_task(run, "running")
    attempt.status, attempt.lease_token = "running", 1
    attempt.lease_expires_at = timezone.now() + dt.timedelta(minutes=10)
    sql.insert([attempt])
    run_write = Guarded(
        WorkflowRun(id=run.id, revision=4, last_seq=1), ["revision", "last_seq"],
        "revision = %s", [("revision", revision)],
    )  # fmt: skip
    attempt_write = Guarded(
        ActivityTask(id=attempt.id, status="completed", result={"ok": 1}),
        ["status", "result"],
        "status = %s AND lease_token = %s AND lease_expires_at > {now}",
        [("status", "running"), ("lease_token", token)],
    )
    event = WorkflowEvent(run=run, seq=1, type="marker", payload={}, created_at=STATEMENT_CLOCK)
    task = new_task(run, "next")
    task.next_attempt_at = STATEMENT_CLOCK
    task.lease_expires_at = STATEMENT_CLOCK + dt.timedelta(seconds=30)
    inserts = [
        Insert([event], shifted=("created_at",)),
        Insert([task], ("next_attempt_at", "lease_expires_at", "schedule_deadline"), True),
    ]
    return run, attempt, run_write, attempt_write, inserts


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("logged", [False, True])
def test_a_step_writes_in_one_statement_on_the_statement_s_clock(
    sql: Statements, logged: bool
) -> None:
    """On Postgres in autocommit: the run's and the attempt's UPDATEs and the INSERTs go as
    one statement; offsets from `STATEMENT_CLOCK` land on the clock it returns. Alike
    whether Django logs queries (it renders them from ``%s`` placeholders) or not."""
    run, attempt, run_write, attempt_write, inserts = _step_rows(sql)
    if connection.vendor != "postgresql":
        assert not sql.single()  # the step path keeps its transactions elsewhere
        return
    assert sql.single()
    sent: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper), CaptureQueriesContext(connection) as captured:
        if not logged:
            connection.force_debug_cursor = False  # as when DEBUG is off
        written = sql.step(run_write, ["id", "revision"], attempt_write, inserts)
    assert len(sent) == 1 and sent[0].startswith("WITH step_run")
    assert len(captured) == (1 if logged else 0)
    assert written is not None
    row, now = written
    assert (str(row.pk), row.revision) == (run.id, 4)
    event, task = inserts[0].instances[0], inserts[1].instances[0]
    assert event.created_at == now  # moved onto the clock, and stored so
    assert WorkflowEvent.objects.get(run_id=run.id).created_at == now
    assert task.pk is not None and task.lease_expires_at == now + dt.timedelta(seconds=30)
    stored = ActivityTask.objects.get(pk=task.pk)
    assert (stored.next_attempt_at, stored.lease_expires_at) == (now, task.lease_expires_at)
    assert stored.schedule_deadline is None  # None stays None
    assert ActivityTask.objects.get(pk=attempt.pk).status == "completed"
    assert WorkflowRun.objects.get(pk=run.id).revision == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stale", ["run", "attempt"])
def test_a_step_whose_guard_fails_writes_nothing(sql: Statements, stale: str) -> None:
    """A run that changed: None. A run as expected with an attempt that lost its lease:
    `AttemptLost`, and the run's UPDATE, which had matched, is undone with the rest."""
    run, attempt, run_write, attempt_write, inserts = _step_rows(
        sql, revision=2 if stale == "run" else 3, token=2 if stale == "attempt" else 1
    )
    if connection.vendor != "postgresql":
        assert not sql.single()
        return
    if stale == "run":
        assert sql.step(run_write, ["id"], attempt_write, inserts) is None
    else:
        with pytest.raises(AttemptLost):
            sql.step(run_write, ["id"], attempt_write, inserts)
    assert WorkflowRun.objects.get(pk=run.id).revision == 3
    assert ActivityTask.objects.get(pk=attempt.pk).status == "running"
    assert not WorkflowEvent.objects.filter(run_id=run.id).exists()
    assert ActivityTask.objects.filter(run_id=run.id).count() == 1
    assert sql.step(replace(run_write, guard_params=[("revision", 3)]), ["id"]) is not None


@pytest.mark.django_db(transaction=True)
def test_rows_inserted_together_are_stored_by_one_statement_where_it_commits_alone(
    sql: Statements,
) -> None:
    run = new_run()
    events = [
        WorkflowEvent(run=run, seq=n, type="marker", payload={"n": n}, created_at=Now())
        for n in (1, 2)
    ]
    with CaptureQueriesContext(connection) as captured:
        sql.insert_together([run], events, [])
    assert len(captured) == (1 if connection.vendor == "postgresql" else 2)
    stored = WorkflowRun.objects.get(pk=run.id)
    assert stored.input == {"args": [1, "two"], "when": "2026-01-01"}
    assert sorted(WorkflowEvent.objects.filter(run_id=run.id).values_list("seq", flat=True)) == [
        1,
        2,
    ]
    assert not run._state.adding and events[0]._state.db == "default"
    with transaction.atomic():  # inside a transaction: one statement a group
        other = new_run()
        with CaptureQueriesContext(connection) as captured:
            sql.insert_together([other], [WorkflowEvent(run=other, seq=1, created_at=Now())])
        assert len(captured) == 2


@pytest.mark.django_db(transaction=True)
def test_a_step_needs_autocommit_and_the_pipeline_setting(sql: Statements, settings: Any) -> None:
    with transaction.atomic():
        assert not sql.single()  # it would not commit alone
    settings.CONTINUUM = {**settings.CONTINUUM, "PIPELINE": False}
    assert not sql.single()


@pytest.mark.django_db(transaction=True)
def test_cursors_are_reused_until_the_connection_changes(sql: Statements) -> None:
    run = new_run()
    sql.insert([run])
    cursor = sql._cursor()
    sql._release(cursor)
    assert sql._cursor() is cursor  # idle, so reused
    sql._release(cursor)

    connection.close()  # as Celery's fix-up does between tasks
    locked = sql.lock(WorkflowRun, run.id)  # a new connection, and a cursor of its own
    assert locked is not None and str(locked[0].pk) == run.id
    fresh = sql._cursor()
    assert fresh is not cursor and fresh.cursor.connection is connection.connection
    sql._release(fresh)

    with CaptureQueriesContext(connection) as captured:  # a logging cursor while it lasts
        sql.lock(WorkflowRun, run.id)
        sql.execute("SELECT 1")
    assert len(captured) == 2 and "continuum_workflowrun" in captured[0]["sql"]
    assert sql.fetchone("SELECT 41 + 1") == (42,)


def test_encoded_objects_read_back_with_their_keys_in_the_same_order() -> None:
    # jsonb reorders an object's keys; the codec encodes them in that order already, so a
    # value in hand and the same value read back iterate alike (replay relies on it).
    value = {"zz": 1, "a": {"y": 1, "x": 2}, "bb": 3, "é": 4, "b": [{"k2": 0, "k1": 0}]}
    encoded = codec.encode(value)
    run = new_run(attributes=encoded)
    run.save()
    stored = WorkflowRun.objects.get(pk=run.id).attributes
    assert list(stored) == list(encoded) == ["a", "b", "bb", "zz", "é"]
    assert list(stored["a"]) == list(encoded["a"]) == ["x", "y"]
    assert list(stored["b"][0]) == list(encoded["b"][0]) == ["k1", "k2"]
    assert codec.decode(stored) == value
