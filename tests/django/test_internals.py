"""Each assumption `continuum_django.journal.internals` makes of Django's undocumented API,
pinned: a Django upgrade that changes one fails the test named for it."""

from __future__ import annotations

import datetime as dt
import tomllib
import uuid
from pathlib import Path
from typing import Any

import django
import psycopg
import pytest
from django.db import DatabaseError, DataError, connection, connections, transaction
from django.db.models import Model
from django.db.models.functions import Now
from django.db.models.signals import post_init, pre_init
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from continuum_django.journal import internals
from continuum_django.journal.lean import Statements
from continuum_django.models import ActivityTask, WorkflowEvent, WorkflowRun

pytestmark = pytest.mark.django_db
MODELS: list[type[Model]] = [WorkflowRun, WorkflowEvent, ActivityTask]


def stored_rows() -> dict[type[Model], Model]:
    """A stored row of each model the step path reads, every column holding a value (of
    every field type the journal has: UUID, char, text, integers, float, boolean, JSON,
    datetime, foreign and one-to-one keys, auto keys)."""
    now = timezone.now()
    parent = WorkflowRun.objects.create(workflow_name="tests.parent")
    run = WorkflowRun.objects.create(
        workflow_name="tests.internals", input={"args": [1, "two"]}, result={"ok": True},
        error={"type": "E"}, attributes={"a": [1.5, None]}, idempotency_key="key",
        lease_owner="w", lease_token=2**40, lease_expires_at=now, next_wakeup_at=now,
        park_detail="text", cancel_requested=True, parent_run=parent, continued_from=parent,
        chain_root_id=uuid.uuid4(), last_seq=3, revision=4, finished_at=now,
    )  # fmt: skip
    event = WorkflowEvent.objects.create(
        run=run, seq=1, type="marker", command_id="0:marker", payload=[1], created_at=now
    )
    task = ActivityTask.objects.create(
        run=run, command_id="1:activity:x", activity="x", args=[1], kwargs={"k": "v"},
        queue="q", timeout=1.5, schedule_to_close_timeout=2.25, heartbeat_timeout=0.5,
        next_attempt_at=now, schedule_deadline=now, attempt_deadline=now,
        heartbeat_deadline=now, lease_expires_at=now, heartbeat_details={"d": 1},
        heartbeat_at=now, result=None, error={"e": 1},
    )  # fmt: skip
    return {WorkflowRun: run, WorkflowEvent: event, ActivityTask: task}


def columns(instance: Model) -> dict[str, Any]:
    return {f.attname: instance.__dict__[f.attname] for f in type(instance)._meta.concrete_fields}


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_a_built_instance_is_the_one_from_db_gives(model: type[Model]) -> None:
    """Assumption 1: ``__new__`` + ``ModelState`` + ``__dict__`` is ``Model.from_db``."""
    stored = stored_rows()[model]
    attnames = [f.attname for f in model._meta.concrete_fields][:-1]  # the last deferred
    values = [stored.__dict__[name] for name in attnames]
    built = internals.built(model, zip(attnames, values, strict=True), db="default")
    orm = model.from_db("default", attnames, values)
    why = "internals.built no longer builds what Model.from_db builds"
    assert columns_of(built) == columns_of(orm), why
    assert (built._state.adding, built._state.db) == (False, "default"), why
    assert built.get_deferred_fields() == orm.get_deferred_fields() != set(), why
    assert built == orm and built.pk == stored.pk, why
    last = model._meta.concrete_fields[-1].attname
    assert getattr(built, last) == getattr(stored, last), why  # a deferred column loads
    built.refresh_from_db()
    assert columns(built) == columns(stored), why
    built.save(update_fields=[attnames[-1]])  # an UPDATE of the stored row, not an INSERT
    assert model.objects.filter(pk=stored.pk).count() == 1, why


def columns_of(instance: Model) -> dict[str, Any]:
    return {k: v for k, v in instance.__dict__.items() if k != "_state"}


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_a_new_built_instance_and_defaults_are_what_init_gives(model: type[Model]) -> None:
    """Assumption 1: ``Field.get_default`` is the default ``Model.__init__`` gives a column,
    and an instance built on no database is a new one, as ``Model()`` is."""
    made = model()
    row = [(f.attname, internals.default(f)()) for f in model._meta.concrete_fields]
    built = internals.built(model, row, db=None)
    why = "internals.default or internals.built(db=None) no longer match Model()"
    assert (built._state.adding, built._state.db) == (True, None), why
    for field in model._meta.concrete_fields:
        if not callable(field.default):  # a callable (uuid4) gives a new value each time
            assert built.__dict__[field.attname] == made.__dict__[field.attname], why
        assert type(built.__dict__[field.attname]) is type(made.__dict__[field.attname]), why
    internals.mark_stored(built, "default")
    assert (built._state.adding, built._state.db) == (False, "default"), why


def test_init_signals_are_known_to_be_listened_to() -> None:
    """Assumption 1: ``Signal.has_listeners`` sees a receiver of ``pre_init`` / ``post_init``
    (``Model.__init__`` sends them; the step path skips it only when nobody listens)."""
    heard: list[object] = []

    def listen(sender: Any, **kwargs: Any) -> None:
        heard.append(sender)

    why = "internals.init_signalled no longer sees init receivers"
    assert not internals.init_signalled(WorkflowEvent), why
    for signal in (pre_init, post_init):
        signal.connect(listen, sender=WorkflowEvent)
        try:
            assert internals.init_signalled(WorkflowEvent), why
            assert internals.listened(signal, WorkflowEvent), why
            WorkflowEvent()
        finally:
            signal.disconnect(listen, sender=WorkflowEvent)
        assert not internals.init_signalled(WorkflowEvent), why
    assert heard == [WorkflowEvent, WorkflowEvent], "Model.__init__ no longer sends its signals"


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_names_and_keys_are_the_orm_s(model: type[Model]) -> None:
    """Assumption 2: ``quote_name``, ``Field.column``, ``Options.auto_field`` and
    ``target_field`` name the table, the columns, the auto key and a foreign key's target
    as the ORM's own SQL and lookups do."""
    stored = stored_rows()[model]
    quote = internals.quoter(connection)
    with CaptureQueriesContext(connection) as captured:
        list(model.objects.filter(pk=stored.pk))
    sql = captured[0]["sql"]
    assert f"FROM {quote(model._meta.db_table)}" in sql, "quote_name no longer quotes as the ORM"
    for field in model._meta.concrete_fields:
        name = f"{quote(model._meta.db_table)}.{quote(internals.column_name(field))}"
        assert name in sql, f"Field.column no longer names {field.name}'s column"
        target = internals.compared_as(field)
        if field.is_relation:
            assert target is field.related_model._meta.pk, "target_field is not the key"
        else:
            assert target is field, "a plain field does not compare as itself"
    auto = internals.auto_key(model)
    assert (auto is not None) == (model is not WorkflowRun), "auto_field no longer is the key"
    assert auto is None or auto is model._meta.pk


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_converters_read_every_column_as_the_orm_does(model: type[Model]) -> None:
    """Assumption 2: the backend's and the column's converters (``get_db_converters`` over
    ``Field.get_col``) turn a raw row into the values the ORM reads."""
    stored = model.objects.get(pk=stored_rows()[model].pk)
    fields = model._meta.concrete_fields
    table, quote = model._meta.db_table, internals.quoter(connection)
    names = ", ".join(quote(internals.column_name(f)) for f in fields)
    pk = model._meta.pk
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {names} FROM {quote(table)} WHERE {quote(pk.column)} = %s",
            [pk.get_db_prep_value(stored.pk, connection)],
        )
        row = list(cursor.fetchone())
    for index, field in enumerate(fields):
        column = internals.column(field, table)
        for convert in internals.converters(connection, column):
            row[index] = convert(row[index], column, connection)
        assert row[index] == stored.__dict__[field.attname], (
            f"the converters of {model.__name__}.{field.attname} no longer read what the ORM"
            f" reads: {row[index]!r} != {stored.__dict__[field.attname]!r}"
        )


def test_now_compiles_as_the_orm_sends_it() -> None:
    """Assumption 2: ``sql.Query`` and its compiler give the SQL the ORM sends for ``Now()``,
    and its converters read the database's clock as an aware datetime."""
    run = stored_rows()[WorkflowRun]
    now_sql, expression = internals.now(WorkflowRun, "default")
    with CaptureQueriesContext(connection) as captured:
        WorkflowRun.objects.filter(pk=run.pk).update(next_wakeup_at=Now())
    assert now_sql in captured[0]["sql"], "Query's compiler no longer compiles Now() so"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {now_sql}")
        value = cursor.fetchone()[0]
    for convert in internals.converters(connection, expression):
        value = convert(value, expression, connection)
    assert isinstance(value, dt.datetime) and value.tzinfo is not None


def test_cast_types_take_each_column_s_values() -> None:
    """Assumption 2: ``Field.cast_db_type`` names a type the column's prepared values cast
    to and compare equal as stored (the step path's ``VALUES`` list casts each)."""
    for model, stored in stored_rows().items():
        table, quote = model._meta.db_table, internals.quoter(connection)
        pk = model._meta.pk
        for field in model._meta.concrete_fields:
            value = field.get_db_prep_save(getattr(stored, field.attname), connection)
            cast = internals.cast_type(field, connection)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT %s::{cast} IS NOT DISTINCT FROM {quote(internals.column_name(field))}"
                    f" FROM {quote(table)} WHERE {quote(pk.column)} = %s",
                    [value, pk.get_db_prep_value(stored.pk, connection)],
                )
                assert cursor.fetchone()[0] is True, f"cast_db_type of {field} is not its type"


def test_the_backend_flags_are_what_the_orm_acts_on() -> None:
    """Assumption 2: ``features.has_select_for_update`` is whether the ORM sends
    ``FOR UPDATE``; ``connection.timezone`` is UTC exactly when the ORM reads aware UTC."""
    run = stored_rows()[WorkflowRun]
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        list(WorkflowRun.objects.select_for_update().filter(pk=run.pk))
    assert internals.locks_rows(connection) == ("FOR UPDATE" in captured[0]["sql"])
    read = WorkflowRun.objects.get(pk=run.pk).created_at
    assert internals.reads_utc(connection) == (read.utcoffset() == dt.timedelta(0))
    assert internals.reads_utc(connection), "the test settings read UTC"


@pytest.mark.django_db(transaction=True)
def test_the_raw_connection_is_psycopg_s_and_follows_the_connection() -> None:
    """Assumption 3: ``connection.connection`` is the psycopg connection (None when closed,
    a new one after ``ensure_connection``) that Django's cursors run on; its pipeline mode
    is what psycopg reports."""
    connection.close()
    assert internals.raw(connection) is None, "a closed connection still has a raw one"
    internals.ensure_connection(connection)
    raw = internals.raw(connection)
    assert isinstance(raw, psycopg.Connection), "connection.connection is not psycopg's"
    with connection.cursor() as cursor:
        made_on, made_raw, _ = internals.cursor_made(cursor)
    assert made_on is connections["default"] and made_raw is raw, "a cursor's db/cursor moved"
    assert internals.cursor_state(connection)[0] is raw
    with Statements("default").transaction():
        assert raw.pgconn.pipeline_status == psycopg.pq.PipelineStatus.ON
    assert raw.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


@pytest.mark.parametrize("logged", [False, True])
def test_a_cursor_logs_queries_exactly_when_django_says(logged: bool, settings: Any) -> None:
    """Assumption 3: ``queries_logged`` is whether ``connection.cursor()`` makes a
    ``CursorDebugWrapper``, which records into ``connection.queries``."""
    settings.DEBUG = False
    connection.force_debug_cursor = logged
    try:
        assert internals.cursor_state(connection)[1] is logged
        before = len(connection.queries_log)
        with connection.cursor() as cursor:
            assert internals.cursor_made(cursor)[2] is logged
            cursor.execute("SELECT 1")
        assert (len(connection.queries_log) > before) is logged
    finally:
        connection.force_debug_cursor = False


def test_a_wrapped_raw_cursor_behaves_as_django_s_own() -> None:
    """Assumption 3: ``make_cursor`` wraps a raw cursor so that ``execute_wrapper`` sees its
    statements, errors come as Django's (the driver's as ``__cause__``), and nothing is
    logged."""
    internals.ensure_connection(connection)
    cursor = internals.wrap_cursor(connection, psycopg.RawCursor(internals.raw(connection)))
    seen: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper), CaptureQueriesContext(connection) as captured:
        cursor.execute("SELECT $1::integer", [7])
        assert cursor.fetchone() == (7,)
    assert seen == ["SELECT $1::integer"], "execute_wrapper no longer sees a wrapped cursor"
    assert len(captured) == 0, "a cursor from make_cursor logs queries"
    with pytest.raises(DataError) as raised, transaction.atomic():
        cursor.execute("SELECT 1 / 0")
    assert isinstance(raised.value.__cause__, psycopg.errors.DivisionByZero)


def test_database_errors_come_as_django_s() -> None:
    """Assumption 3: ``wrap_database_errors`` turns psycopg's errors into Django's."""
    internals.ensure_connection(connection)
    raw = internals.raw(connection)
    with (
        pytest.raises(DatabaseError) as raised,
        transaction.atomic(),
        internals.database_errors(connection),
    ):
        raw.execute("SELEC 1")
    assert isinstance(raised.value.__cause__, psycopg.errors.SyntaxError)


@pytest.mark.django_db(transaction=True)
def test_atomic_blocks_are_counted_as_the_connection_holds_them() -> None:
    """Assumption 3: ``atomic_blocks`` / ``in_atomic_block`` tell the outermost atomic block
    (the one that began the transaction) from none and from a nested one."""
    assert not internals.in_atomic_block(connection)
    assert not internals.outermost_atomic(connection)
    with transaction.atomic():
        assert internals.in_atomic_block(connection)
        assert internals.outermost_atomic(connection)
        with transaction.atomic():
            assert not internals.outermost_atomic(connection)
    assert not internals.in_atomic_block(connection)


def test_the_django_under_test_is_one_the_package_claims() -> None:
    """The classifiers name only the Django releases these tests passed on: a new one
    fails here until its classifier is added, after this file has passed on it."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    claimed = tomllib.loads(pyproject.read_text())["project"]["classifiers"]
    running = "Framework :: Django :: {}.{}".format(*django.VERSION[:2])
    assert running in claimed, (
        f"tested with Django {django.get_version()}, which pyproject.toml does not claim: "
        "once tests/django/test_internals.py passes on it, add the classifier"
    )
