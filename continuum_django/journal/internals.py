"""Every use the package makes of Django outside its documented API, in one place.

The step path (`journal.lean`) keeps its speed by doing a few things the ORM does
internally without going through a QuerySet. What that needs of Django that its
documentation does not promise sits here, one small function per assumption, each pinned
by a test in ``tests/django/test_internals.py`` that names the assumption when it fails,
and a test (``tests/engine/test_internals_confined.py``) fails if any other module uses
these names. Tested with Django 5.2 (CI); on a Django upgrade, this module and its tests
are the part to check.

The assumptions, and why each is needed:

1. Instances: ``Model.__new__`` with a fresh ``ModelState`` and the loaded columns put in
   ``__dict__`` gives the instance ``Model.from_db`` would (``__init__`` walks every
   field, several times the cost); ``Signal.has_listeners`` says when ``pre_init`` /
   ``post_init`` must run, so that the ORM's own path is taken then (and when a signal
   of the package's own need not be sent at all); ``Field.get_default``
   is each column's default, as ``Model.__init__`` takes it.
2. Compiling: ``sql.Query`` and its compiler give the backend's SQL for ``Now()``;
   ``connection.ops.get_db_converters`` with ``Expression.get_db_converters`` (over
   ``Field.get_col``) are the converters the compiler applies to a column it reads;
   ``Field.cast_db_type`` is a column's type in a cast; ``connection.ops.quote_name``
   quotes a table or column; ``Field.column`` is the column's name, ``target_field`` what a
   foreign key compares as, ``Options.auto_field`` the auto-incremented key;
   ``connection.features.has_select_for_update`` and ``connection.timezone`` tell a
   backend apart where the SQL differs.
3. Connections: ``connection.connection`` is the raw psycopg connection (pipeline mode,
   ``RawCursor``, ``LISTEN``); ``connection.make_cursor`` wraps a raw cursor as Django
   wraps its own (``execute_wrapper``, Django's exceptions, no query log);
   ``queries_logged`` / ``CursorDebugWrapper`` tell whether a cursor logs into
   ``connection.queries``; a cursor's ``db`` and ``cursor`` name its connection;
   ``ensure_connection``, ``wrap_database_errors``, ``atomic_blocks`` and
   ``in_atomic_block`` are the connection's own state, as its atomic blocks use them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from functools import cache
from typing import Any, TypeVar

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper
from django.db.models import Expression, Field, Model
from django.db.models.base import ModelState
from django.db.models.functions import Now
from django.db.models.signals import post_init, pre_init
from django.db.models.sql import Query
from django.dispatch import Signal

M = TypeVar("M", bound=Model)
Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]

# -- 1. instances ---------------------------------------------------------------------


def built(model: type[M], columns: Iterable[tuple[str, Any]], db: str | None) -> M:
    """An instance holding ``columns`` (attname, value) and nothing else, without
    ``Model.__init__``: stored on ``db``, or a new one (adding, on no database yet) when
    ``db`` is None."""
    instance = model.__new__(model)
    state = instance._state = ModelState()
    if db is not None:
        state.adding, state.db = False, db
    instance.__dict__.update(columns)
    return instance


def mark_stored(instance: Model, using: str) -> None:
    """Marks an instance just written as ``save()`` marks it: stored on ``using``."""
    state = instance._state
    state.adding, state.db = False, using


def listened(signal: Signal, sender: Any) -> bool:
    """Whether any receiver would hear ``signal`` sent by ``sender``."""
    return signal.has_listeners(sender)


def init_signalled(model: type[Model]) -> bool:
    """Whether anything listens for the model's ``pre_init`` or ``post_init``."""
    return pre_init.has_listeners(model) or post_init.has_listeners(model)


def default(field: Field[Any, Any]) -> Callable[[], Any]:
    """The field's default, as ``Model.__init__`` computes it."""
    return field.get_default


# -- 2. compiling ---------------------------------------------------------------------


def quoter(connection: BaseDatabaseWrapper) -> Callable[[str], str]:
    """The backend's quoting of a table's or column's name."""
    return connection.ops.quote_name


def column_name(field: Field[Any, Any]) -> str:
    """The column of a concrete field."""
    return field.column or field.attname


def compared_as(field: Field[Any, Any]) -> Field[Any, Any]:
    """The field a lookup value is prepared by: a foreign key's target."""
    return getattr(field, "target_field", field)


@cache
def auto_key(model: type[Model]) -> Field[Any, Any] | None:
    """The model's primary key when the database assigns it, else None."""
    meta = model._meta
    return meta.pk if meta.auto_field is meta.pk else None


def now(model: type[Model], using: str) -> tuple[str, Expression]:
    """The SQL of ``Now()`` on this backend, and the resolved expression (for converters)."""
    query = Query(model)
    resolved = Now().resolve_expression(query)
    sql, params = query.get_compiler(using).compile(resolved)
    assert not params, "Now() compiles without parameters"
    return sql, resolved


def converters(connection: BaseDatabaseWrapper, expression: Any) -> list[Converter]:
    """What the compiler applies, in order, to a value read for ``expression``."""
    return [
        *connection.ops.get_db_converters(expression),
        *expression.get_db_converters(connection),
    ]


def column(field: Field[Any, Any], table: str) -> Expression:
    """The expression of the field's column in ``table``, as a SELECT reads it."""
    return field.get_col(table)


def cast_type(field: Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    return str(field.cast_db_type(connection))


def locks_rows(connection: BaseDatabaseWrapper) -> bool:
    """Whether the backend has ``SELECT ... FOR UPDATE``."""
    return bool(connection.features.has_select_for_update)


def reads_utc(connection: BaseDatabaseWrapper) -> bool:
    """Whether the connection reads datetimes aware, in UTC (``USE_TZ``, no ``TIME_ZONE``
    of its own or UTC)."""
    return connection.timezone is dt.UTC


# -- 3. connections and cursors -------------------------------------------------------


def raw(connection: BaseDatabaseWrapper) -> Any:
    """The DB-API connection under Django's (psycopg's on Postgres); None when closed."""
    return connection.connection


def cursor_state(connection: BaseDatabaseWrapper) -> tuple[Any, bool]:
    """The raw connection and whether Django logs queries on it: when either changes, a
    cursor made before is not one Django would make now."""
    return connection.connection, connection.queries_logged


def cursor_made(cursor: Any) -> tuple[BaseDatabaseWrapper, Any, bool]:
    """A cursor of Django's: its connection, the raw connection it runs on, and whether it
    logs queries (see `cursor_state`)."""
    return cursor.db, cursor.cursor.connection, isinstance(cursor, CursorDebugWrapper)


def wrap_cursor(connection: BaseDatabaseWrapper, cursor: Any) -> Any:
    """A raw cursor wrapped as Django wraps its own, without logging queries."""
    return connection.make_cursor(cursor)


def ensure_connection(connection: BaseDatabaseWrapper) -> None:
    connection.ensure_connection()


def database_errors(connection: BaseDatabaseWrapper) -> AbstractContextManager[None]:
    """Turns the driver's exceptions into Django's, as a cursor of Django's does."""
    return connection.wrap_database_errors


def outermost_atomic(connection: BaseDatabaseWrapper) -> bool:
    """Whether exactly one atomic block is open: it began the transaction."""
    return len(connection.atomic_blocks) == 1


def in_atomic_block(connection: BaseDatabaseWrapper) -> bool:
    return bool(connection.in_atomic_block)
