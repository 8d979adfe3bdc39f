"""The step path's statements, compiled once per table and column set instead of per call.

Building a statement through a QuerySet costs the worker more CPU than the database spends
running it (about 1.8 ms against 0.2 ms for the row lock on the benchmark machine), and the
step path runs a handful of them per activity. These helpers take table and column names,
value preparation (``pre_save``, ``get_db_prep_save``) and result conversion (the backend's
and the field's converters) from the models' own metadata, so they send what the ORM would
send for the same row and hand back the same model instances; they only skip rebuilding
the SQL text. On Postgres, `Statements.transaction` also pipelines a step's statements.
Everything off the step path keeps using QuerySets. What this needs of Django beyond its
documented API goes through `internals`, where each assumption is listed and pinned.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.db import DataError, connections
from django.db.models import Expression, Field, Model
from django.db.models.functions import Now
from django.db.transaction import atomic

from ..conf import app_settings
from . import internals
from .internals import Converter, column_name

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

M = TypeVar("M", bound=Model)


def _to_bool(value: Any, expression: Any, connection: Any) -> bool:
    return bool(value)  # SQLite answers EXISTS with 0 or 1


_missing = object()

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# The clock a row built for `Statements.step` is given in place of the database's: its
# columns named ``shifted`` hold offsets from it, which the statement moves onto its clock
# (its SQL subtracts Postgres's ``'epoch'``, this same instant).
STATEMENT_CLOCK = _EPOCH


def _from_micros(value: Any, expression: Any, connection: Any) -> dt.datetime:
    """The database's clock, read as whole microseconds since the epoch."""
    return _EPOCH + dt.timedelta(microseconds=value)


@cache
def _writes(model: type[Model], on_clock: tuple[str, ...]) -> list[tuple[Field[Any, Any], bool]]:
    """The fields an INSERT of ``model`` sends (all but an auto key and those on the clock),
    each with whether its value is computed on save (``pre_save`` overridden, as for
    ``auto_now``) rather than read from the instance."""
    auto_pk = internals.auto_key(model)
    return [
        (field, type(field).pre_save is not Field.pre_save)
        for field in model._meta.concrete_fields
        if field is not auto_pk and field.attname not in on_clock
    ]


def _loaded(model: type[M], using: str, attnames: Sequence[str], values: Sequence[Any]) -> M:
    """``model.from_db(using, attnames, values)`` (the names in the model's column order):
    the instance of a stored row with those columns loaded and the others deferred.

    ``Model.__init__`` walks every field to set each loaded one in the instance's
    ``__dict__`` (the descriptors of a fresh instance do no more); this sets them there
    directly, at a fraction of the cost. Only when nothing listens for the model's
    ``pre_init`` / ``post_init``: otherwise the ORM's own path runs, and they hear of it.
    """
    if internals.init_signalled(model):
        return model.from_db(using, attnames, values)
    return internals.built(model, zip(attnames, values, strict=True), db=using)


@cache
def _columns(model: type[Model]) -> tuple[frozenset[str], list[tuple[str, Callable[[], Any]]]]:
    """A model's concrete columns by attname, and each column's default, in column order."""
    fields = model._meta.concrete_fields
    return frozenset(f.attname for f in fields), [(f.attname, internals.default(f)) for f in fields]


class _Select:
    """One compiled SELECT: its SQL and how to turn a row into Python values."""

    def __init__(self, sql: str, columns: list[tuple[list[Converter], Any]]) -> None:
        self.sql = sql
        self.columns = columns

    def convert(self, row: Sequence[Any], connection: BaseDatabaseWrapper) -> list[Any]:
        values = list(row)
        for index, (converters, expression) in enumerate(self.columns):
            for converter in converters:
                values[index] = converter(values[index], expression, connection)
        return values


class Pending(Generic[M]):
    """An ``UPDATE ... RETURNING`` sent and not read yet: in a `Statements.transaction`,
    the statements sent after it travel with it, and reading it waits for the answers."""

    def __init__(
        self,
        cursor: Any,
        model: type[M],
        using: str,
        returned: Sequence[str],
        select: _Select,
        connection: BaseDatabaseWrapper,
        release: Callable[[Any], None],
    ) -> None:
        self._cursor = cursor
        self._model = model
        self._using = using
        self._returned = returned
        self._select = select
        self._connection = connection
        self._release = release

    def fetch(self) -> tuple[M, Any] | None:
        """The row as a model instance (its other columns deferred) and the database's
        clock; None when no row matched (nothing written)."""
        try:
            row = self._cursor.fetchone()
        finally:
            self._release(self._cursor)
        if row is None:
            return None
        values = self._select.convert(row, self._connection)
        return _loaded(self._model, self._using, self._returned, values[:-1]), values[-1]


class AttemptLost(Exception):
    """`Statements.step` found the run as expected but not the attempt: it wrote nothing."""


@dataclass(frozen=True, slots=True)
class Insert:
    """Rows of one model that `Statements.step` inserts, built on `STATEMENT_CLOCK`:
    each column named in ``shifted`` is an offset from it (or None), which the statement
    adds to its own clock. ``returning``: read back their auto keys."""

    instances: Sequence[Model]
    shifted: tuple[str, ...] = ()
    returning: bool = False


@dataclass(frozen=True, slots=True)
class Guarded(Generic[M]):
    """A row's guarded UPDATE for `Statements.step`: as `Statements.update` takes it."""

    instance: M
    attnames: Sequence[str]
    guard: str
    guard_params: Sequence[tuple[str, Any]]


class Statements:
    """Compiled statements on one database alias (its connection is per thread, as usual)."""

    def __init__(self, using: str) -> None:
        self.using = using
        self._cache: dict[tuple[Any, ...], Any] = {}
        # Per thread: idle cursors (`_cursors`), and in a pipelined `transaction` the reads
        # left until after its COMMIT.
        self._local = threading.local()

    @property
    def connection(self) -> BaseDatabaseWrapper:
        return connections[self.using]

    # -- cursors -------------------------------------------------------------

    def _cursors(self, connection: BaseDatabaseWrapper) -> list[Any]:
        """This thread's idle cursors on ``connection`` as it is now: a new (empty) list when
        it reconnected or started or stopped logging queries since they were made."""
        local = self._local
        key = internals.cursor_state(connection)
        if getattr(local, "key", None) != key or key[0] is None:
            local.key, local.cursors, local.raw_cursor, local.step_cursor = key, [], None, None
        cursors: list[Any] = local.cursors
        return cursors

    def _cursor(self, connection: BaseDatabaseWrapper | None = None) -> Any:
        """A cursor of this thread's connection, reused: making one costs the caller about
        three times what sending a statement through it does (Django's wrapper, psycopg's
        cursor and its adapters). Hand it back with `_release` once its answer is read."""
        if connection is None:
            connection = self.connection
        idle = self._cursors(connection)
        if idle:
            return idle.pop()
        cursor = connection.cursor()  # connects first, if need be
        self._cursors(connection)  # the key names the connection it made
        return cursor

    def _release(self, cursor: Any) -> None:
        connection, raw, logs = internals.cursor_made(cursor)  # this thread's connection
        if (raw, logs) == internals.cursor_state(connection):
            self._cursors(connection).append(cursor)
        else:
            cursor.close()

    @contextmanager
    def _using_cursor(self, connection: BaseDatabaseWrapper | None = None) -> Iterator[Any]:
        cursor = self._cursor(connection)
        try:
            yield cursor
        finally:
            self._release(cursor)

    def _send(self, connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> Any:
        """A cursor that sent ``sql``, its answer to be read (and the cursor released) later."""
        cursor = self._cursor(connection)
        try:
            cursor.execute(sql, params)
        except BaseException:
            self._release(cursor)
            raise
        return cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Send one statement of raw SQL (in a `transaction`, without waiting for it)."""
        with self._using_cursor() as cursor:
            cursor.execute(sql, params)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The first row of a query of raw SQL that has one."""
        with self._using_cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            raise LookupError(f"no row from {sql!r}")
        return tuple(row)

    # -- compiling -----------------------------------------------------------

    def _converters(self, expression: Expression) -> list[Converter]:
        return internals.converters(self.connection, expression)

    def _now(self, model: type[Model]) -> tuple[str, Expression]:
        """The SQL of ``Now()`` on this backend, and the resolved expression (for converters)."""
        return internals.now(model, self.using)

    def _clock(self, model: type[Model]) -> tuple[str, tuple[list[Converter], Any]]:
        """The SQL that reads the database's clock, and how to convert what it returns.

        On Postgres with time zones on in UTC, as whole microseconds since the epoch: Django
        loads a ``timestamptz`` with a loader written in Python (about 20 µs a value on the
        benchmark machine), an integer with psycopg's C one. The value is the same instant.
        """
        now_sql, now_expression = self._now(model)
        connection = self.connection
        if connection.vendor == "postgresql" and internals.reads_utc(connection):
            return f"(EXTRACT(EPOCH FROM {now_sql}) * 1000000)::bigint", ([_from_micros], None)
        return now_sql, (self._converters(now_expression), now_expression)

    def _column(self, field: Field[Any, Any]) -> str:
        return internals.quoter(self.connection)(column_name(field))

    def _select(
        self,
        model: type[Model],
        attnames: Sequence[str],
        where: Sequence[tuple[str, str]],
        *,
        lock: bool = False,
        now: bool = False,
        exists: Sequence[str] = (),
        order_by: str | None = None,
    ) -> _Select:
        key = ("select", model, tuple(attnames), tuple(where), lock, now, tuple(exists), order_by)
        compiled = self._cache.get(key)
        if compiled is not None:
            return compiled
        meta = model._meta
        table = internals.quoter(self.connection)(meta.db_table)
        fields = [self._concrete(model, name) for name in attnames]
        parts = [f"{table}.{self._column(field)}" for field in fields]
        columns: list[tuple[list[Converter], Any]] = []
        for field in fields:
            column = internals.column(field, meta.db_table)
            columns.append((self._converters(column), column))
        now_sql = self._now(model)[0]
        if now:
            clock_sql, clock = self._clock(model)
            parts.append(clock_sql)
            columns.append(clock)
        for condition in exists:  # SQL over the table, for a boolean flag
            parts.append(f"EXISTS ({condition.format(table=table, now=now_sql)})")
            columns.append(([_to_bool], columns[0][1]))
        clauses = " AND ".join(
            f"{table}.{self._column(self._concrete(model, name))} {op} %s" for name, op in where
        )
        sql = f"SELECT {', '.join(parts)} FROM {table} WHERE {clauses}"
        if order_by:
            sql += f" ORDER BY {table}.{self._column(self._concrete(model, order_by))}"
        if lock and internals.locks_rows(self.connection):
            sql += " FOR UPDATE"
        compiled = _Select(sql, columns)
        self._cache[key] = compiled
        return compiled

    @staticmethod
    @cache
    def _concrete(model: type[Model], attname: str) -> Field[Any, Any]:
        meta = model._meta
        if attname == "pk":
            return meta.pk
        for field in meta.concrete_fields:
            if field.attname == attname:
                return field
        raise LookupError(f"{model.__name__} has no column {attname!r}")

    def partial(self, model: type[M], **values: Any) -> M:
        """An instance of a stored row with only ``values`` loaded (the others deferred),
        to write those columns: cheaper than ``model(**values)``, which computes every
        other column's default."""
        names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
        if len(names) != len(values):
            unknown = sorted(set(values) - set(names))
            raise LookupError(f"{model.__name__} has no column {unknown[0]!r}")
        # In the model's column order, as `Model.from_db` takes them.
        return _loaded(model, self.using, names, [values[name] for name in names])

    def new(self, model: type[M], **values: Any) -> M:
        """``model(**values)``, a row to insert, its columns named by attname (``run_id``,
        not ``run``); the others take their defaults. Built as `_loaded` builds, without
        ``Model.__init__``'s walk (unless something listens for the model's init signals)."""
        attnames, defaults = _columns(model)
        if not attnames.issuperset(values):
            unknown = sorted(set(values) - attnames)
            raise LookupError(f"{model.__name__} has no column {unknown[0]!r}")
        if internals.init_signalled(model):
            return model(**values)
        row = ((name, values[name] if name in values else default()) for name, default in defaults)
        return internals.built(model, row, db=None)

    def prep(
        self,
        model: type[Model],
        attname: str,
        value: Any,
        connection: BaseDatabaseWrapper | None = None,
    ) -> Any:
        """A lookup value as the column stores it (on SQLite a UUID is 32 hex digits)."""
        field = self._concrete(model, attname)
        target = internals.compared_as(field)
        return target.get_db_prep_value(value, connection or self.connection)

    # -- running -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``transaction.atomic()`` whose statements travel pipelined on Postgres.

        Django's atomic block still decides everything (rollback on error, on-commit
        callbacks after the commit); only the wire traffic changes. psycopg's pipeline mode
        sends statements without waiting for each answer until one is read, so a step's
        transaction costs two or three round trips instead of one per statement. BEGIN
        and COMMIT go down the pipeline as statements (psycopg would otherwise wait for
        the BEGIN alone); Django's own commit then finds the transaction done. What
        `insert` reads back with ``then`` is read after the COMMIT, with its answer.

        Only the statements of this module may run inside: the ORM reads ``rowcount``
        after some writes, and in a pipeline it is known only once the answer is read.
        Inside an outer transaction, off Postgres, or with ``CONTINUUM["PIPELINE"]`` off,
        this is a plain atomic block.
        """
        connection = self.connection
        with atomic(using=self.using):
            if not self._pipelines(connection):
                yield
                return
            raw = internals.raw(connection)
            raw.autocommit = True  # at the wire; Django's atomic block is unaware
            later: list[Callable[[], None]] = []
            self._local.later = later
            try:
                # Errors found when the pipeline syncs come as Django's, as they would from
                # a cursor (an IntegrityError is django.db.IntegrityError).
                with internals.database_errors(connection), raw.pipeline():
                    command = self._raw_cursor(connection)
                    command.execute("BEGIN")
                    yield
                    command.execute("COMMIT")
            except BaseException:
                raw.rollback()  # a no-op once the pipeline has ended the transaction
                raise
            finally:
                raw.autocommit = False
                self._local.later = None
            for read in later:  # the answers came with the COMMIT's: no round trip
                read()

    def _raw_cursor(self, connection: BaseDatabaseWrapper) -> Any:
        """A psycopg cursor of the connection, reused for BEGIN and COMMIT; renewed with the
        idle cursors when the connection changes (`_cursors` forgets both)."""
        self._cursors(connection)
        if self._local.raw_cursor is None:
            self._local.raw_cursor = internals.raw(connection).cursor()
        return self._local.raw_cursor

    @staticmethod
    def _pipelines(connection: BaseDatabaseWrapper) -> bool:
        """Whether `transaction` pipelines on this connection (it must hold no transaction
        yet: the atomic block it opened is the outermost one)."""
        if connection.vendor != "postgresql" or not internals.outermost_atomic(connection):
            return False
        if not app_settings().PIPELINE:
            return False
        import psycopg

        return isinstance(internals.raw(connection), psycopg.Connection) and bool(
            psycopg.Pipeline.is_supported()
        )

    def lock(
        self,
        model: type[M],
        pk: Any,
        *,
        defer: Iterable[str] = (),
        exists: dict[str, str] | None = None,
        for_update: bool = True,
    ) -> tuple[M, Any] | None:
        """``SELECT ... FOR UPDATE`` one row with the database's clock; None when it is gone.
        (``for_update=False``: read it without a lock.)

        ``defer`` leaves columns out (they load on access, as with ``QuerySet.defer``);
        ``exists`` adds boolean attributes, each an ``EXISTS`` over a subquery that may
        name the row's table as ``{table}`` and the database's clock as ``{now}``.
        """
        skipped = set(defer)
        attnames = [f.attname for f in model._meta.concrete_fields if f.attname not in skipped]
        flags = exists or {}
        select = self._select(
            model,
            attnames,
            [("pk", "=")],
            lock=for_update,
            now=True,
            exists=tuple(flags.values()),
        )
        connection = self.connection
        with self._using_cursor(connection) as cursor:
            cursor.execute(select.sql, [self.prep(model, "pk", pk, connection)])
            row = cursor.fetchone()
        if row is None:
            return None
        values = select.convert(row, connection)
        instance = _loaded(model, self.using, attnames, values[: len(attnames)])
        for offset, name in enumerate(flags, start=len(attnames) + 1):
            setattr(instance, name, values[offset])
        return instance, values[len(attnames)]

    def rows(
        self,
        model: type[Model],
        attnames: Sequence[str],
        where: Sequence[tuple[str, str]],
        params: Sequence[Any],
        order_by: str | None = None,
    ) -> list[list[Any]]:
        """Converted values of the selected columns of every matching row."""
        select = self._select(model, attnames, where, order_by=order_by)
        connection = self.connection
        with self._using_cursor(connection) as cursor:
            prepared = [
                self.prep(model, name, value, connection)
                for (name, _), value in zip(where, params, strict=True)
            ]
            cursor.execute(select.sql, prepared)
            return [select.convert(row, connection) for row in cursor.fetchall()]

    def update(
        self,
        instance: Model,
        attnames: Sequence[str],
        guard: str = "",
        guard_params: Sequence[tuple[str, Any]] = (),
    ) -> int:
        """``instance.save(update_fields=attnames)``; returns the number of rows it changed.

        ``guard`` adds conditions to the row's WHERE clause, its ``%s`` taking the values
        of ``guard_params``, each prepared as the named column stores it (``{now}`` in it
        is the database's clock, as is a field's value ``Now()``).
        """
        connection = self.connection
        sql, params, _ = self._update(instance, attnames, guard, guard_params, (), connection)
        with self._using_cursor(connection) as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

    def update_returning(
        self,
        instance: M,
        attnames: Sequence[str],
        guard: str,
        guard_params: Sequence[tuple[str, Any]],
        returning: Sequence[str],
    ) -> Pending[M]:
        """`update`, reading back the row's ``returning`` columns (the others are deferred)
        and the database's clock in the same statement, when its `Pending.fetch` is
        called: in a `transaction`, statements sent before then travel together."""
        model = type(instance)
        wanted = set(returning)  # in the model's column order, as `Model.from_db` takes them
        returned = [f.attname for f in model._meta.concrete_fields if f.attname in wanted]
        connection = self.connection
        sql, params, select = self._update(
            instance, attnames, guard, guard_params, returned, connection
        )
        cursor = self._send(connection, sql, params)
        return Pending(cursor, model, self.using, returned, select, connection, self._release)

    def single(self) -> bool:
        """Whether `step` may run here: on Postgres, in autocommit (no transaction open,
        so its statement commits alone), with ``CONTINUUM["PIPELINE"]`` on."""
        connection = self.connection
        return (
            connection.vendor == "postgresql"
            and not internals.in_atomic_block(connection)
            and app_settings().PIPELINE
        )

    def step(
        self,
        run: Guarded[M],
        returning: Sequence[str],
        attempt: Guarded[Any] | None = None,
        inserts: Sequence[Insert] = (),
        announce: tuple[str, Sequence[Any]] | None = None,
    ) -> tuple[M, dt.datetime] | None:
        """A step's writes as one statement that commits alone (see `single`): the run's
        guarded UPDATE and, only if it matched, the attempt's guarded UPDATE and then, only
        if that matched too, the INSERTs, as data-modifying CTEs that each wait for the one
        before (so the run's row is locked before the attempt's, the usual order).

        Returns what `Pending.fetch` returns for the run's UPDATE, having set the auto keys
        of the ``returning`` inserts and moved their ``shifted`` columns onto the clock;
        None when the run did not match (nothing written). When the run matched and the
        attempt did not, the statement fails on purpose, so that the run's UPDATE is undone
        with it, and this raises `AttemptLost`. ``announce``: an SQL expression (and its
        parameters) over the written run's row, ``step_run``, evaluated once everything
        matched, as a NOTIFY is (sent when the statement commits).

        One statement instead of a transaction's five or six: the client sends and reads
        once, and Postgres runs no BEGIN or COMMIT of its own (about a third less CPU for
        both, measured with psycopg on the journal's tables; docs/performance.md).
        """
        connection = self.connection  # looked up once: Django's lookup is not free
        model = type(run.instance)
        wanted = set(returning)
        returned = [f.attname for f in model._meta.concrete_fields if f.attname in wanted]
        run_sql, params, select = self._update(
            run.instance, run.attnames, run.guard, run.guard_params, returned, connection
        )
        parts: list[str] = [run_sql]
        gate = "step_run"
        if attempt is not None:
            attempt_sql, attempt_params, _ = self._update(
                attempt.instance,
                attempt.attnames,
                f"({attempt.guard}) AND EXISTS (SELECT 1 FROM step_run)",
                attempt.guard_params,
                (),
                connection,
            )
            parts.append(attempt_sql)
            params += attempt_params
            gate = "step_attempt"
        keyed: list[Insert] = []
        keys: list[str] = []
        for index, insert in enumerate(insert for insert in inserts if insert.instances):
            sql, insert_params, key = self._insert_select(
                insert, f"step_insert{index}", gate, connection
            )
            parts.append(sql)
            params += insert_params
            keys.append(key)
            if key:
                keyed.append(insert)
        if announce is not None:
            parts.append(announce[0])
            params += announce[1]
        cached = ("step", attempt is not None, announce is not None, *keys, *parts)
        statements = self._cache.get(cached)
        if statements is None:
            sql = self._compose(parts, attempt is not None, keys, announce is not None)
            statements = self._cache[cached] = (sql, self._numbered(sql))
        internals.ensure_connection(connection)
        # Where Django logs queries it renders them from ``%s``: the usual cursor then.
        logged = internals.cursor_state(connection)[1]
        cursor = self._cursor(connection) if logged else self._step_cursor(connection)
        try:
            cursor.execute(statements[0] if logged else statements[1], params)
            row = cursor.fetchone()
        except DataError as exc:
            import psycopg

            if isinstance(exc.__cause__, psycopg.errors.DivisionByZero):
                raise AttemptLost() from exc
            raise
        finally:
            if logged:
                self._release(cursor)
        if row is None:
            return None
        count = len(returned) + 1
        values = select.convert(row[:count], connection)
        clock: dt.datetime = values[-1]
        for insert, ids in zip(keyed, row[count:], strict=False):  # then the abort, announce
            pk = type(insert.instances[0])._meta.pk.attname
            for instance, value in zip(insert.instances, ids, strict=True):
                setattr(instance, pk, value)
        offset = clock - STATEMENT_CLOCK
        for insert in inserts:
            for instance in insert.instances:
                internals.mark_stored(instance, self.using)
                for name in insert.shifted:
                    value = instance.__dict__[name]
                    if value is not None:
                        instance.__dict__[name] = value + offset
        return _loaded(model, self.using, returned, values[:-1]), clock

    @staticmethod
    def _compose(parts: list[str], attempt: bool, keys: list[str], announce: bool) -> str:
        """`step`'s statement from its parts (the run's UPDATE, the attempt's, the INSERTs'
        CTEs, the announcement) and the key column each INSERT returns ("" for none)."""
        ctes = [f"step_run AS ({parts[0]})"]
        if attempt:
            ctes.append(f"step_attempt AS ({parts[1]} RETURNING 1)")
        first = 1 + attempt
        ctes += parts[first : first + len(keys)]
        reads = [
            f"(SELECT array_agg({key} ORDER BY {key}) FROM step_insert{index})"
            for index, key in enumerate(keys)
            if key
        ]
        if attempt:  # division by zero: the run matched, the attempt did not
            reads.append("1 / (SELECT count(*) FROM step_attempt)::integer")
        if announce:
            reads.append(parts[-1])
        extra = "".join(f", {read}" for read in reads)
        return f"WITH {', '.join(ctes)} SELECT step_run.*{extra} FROM step_run"

    @staticmethod
    def _numbered(sql: str) -> str:
        """``sql`` with ``$1``, ``$2``, ... for its ``%s`` placeholders."""
        pieces = sql.split("%s")
        numbered = (f"{piece}${n}" for n, piece in enumerate(pieces[:-1], start=1))
        return "".join(numbered) + pieces[-1]

    def _step_cursor(self, connection: BaseDatabaseWrapper) -> Any:
        """This thread's cursor for `step`, reused: psycopg's `RawCursor`, which sends the
        statement's ``$n`` placeholders as they are. psycopg's other cursors rewrite
        ``%s`` on every call for a statement this long or with this many parameters
        (over 4,096 characters or 50 parameters they no longer cache the rewrite), which
        costs more than a hundred microseconds a step. Django wraps it as it wraps its own
        cursors (``execute_wrapper`` and its exceptions; not where it logs queries)."""
        import psycopg

        local = self._local
        self._cursors(connection)  # forgets the cursor when the connection changed
        if local.step_cursor is None:
            raw = psycopg.RawCursor(internals.raw(connection))
            local.step_cursor = internals.wrap_cursor(connection, raw)
        return local.step_cursor

    def _insert_select(
        self, insert: Insert, name: str, gate: str, connection: BaseDatabaseWrapper
    ) -> tuple[str, list[Any], str]:
        """`step`'s CTE ``name`` that inserts ``insert``'s rows if ``gate`` has a row, its
        parameters, and the key column it returns ("" for none). The values are cast to
        their columns' types: a VALUES list in a SELECT has no target to take them from."""
        instances = insert.instances
        model = type(instances[0])
        meta = model._meta
        auto_pk = internals.auto_key(model)
        returning = insert.returning and auto_pk is not None
        key = ("insert-select", model, len(instances), insert.shifted, returning, name, gate)
        compiled = self._cache.get(key)
        if compiled is None:
            quote = internals.quoter(connection)
            now_sql = self._now(model)[0]
            fields = [field for field, _ in _writes(model, ())]
            row = ", ".join(f"%s::{internals.cast_type(f, connection)}" for f in fields)
            aliases = [f"c{i}" for i in range(len(fields))]
            chosen = ", ".join(
                f"{now_sql} + (v.{alias} - TIMESTAMPTZ 'epoch')"
                if f.attname in insert.shifted
                else f"v.{alias}"
                for f, alias in zip(fields, aliases, strict=True)
            )
            sql = (
                f"{name} AS (INSERT INTO {quote(meta.db_table)}"
                f" ({', '.join(quote(column_name(f)) for f in fields)})"
                f" SELECT {chosen} FROM (VALUES {', '.join(f'({row})' for _ in instances)})"
                f" AS v ({', '.join(aliases)}) WHERE EXISTS (SELECT 1 FROM {gate})"
            )
            column = quote(column_name(auto_pk)) if returning and auto_pk is not None else ""
            if column:
                sql += f" RETURNING {column}"
            compiled = self._cache[key] = (sql + ")", column)
        sql, column = compiled
        return sql, self._values(instances, (), connection), column

    def _update(
        self,
        instance: Model,
        attnames: Sequence[str],
        guard: str,
        guard_params: Sequence[tuple[str, Any]],
        returned: Sequence[str],
        connection: BaseDatabaseWrapper,
    ) -> tuple[str, list[Any], _Select]:
        """The UPDATE (with ``RETURNING`` the ``returned`` columns and the clock, if any),
        its parameters, and how to convert the row it returns."""
        model = type(instance)
        # Read from __dict__: a deferred column is not loaded just to be overwritten.
        on_clock = tuple(name for name in attnames if isinstance(instance.__dict__.get(name), Now))
        key = ("update", model, tuple(attnames), guard, on_clock, tuple(returned))
        compiled = self._cache.get(key)
        if compiled is None:
            quote = internals.quoter(connection)
            table = model._meta.db_table
            now_sql = self._now(model)[0]
            fields = [self._concrete(model, name) for name in attnames]
            assignments = ", ".join(
                f"{quote(column_name(field))} = {now_sql if field.attname in on_clock else '%s'}"
                for field in fields
            )
            sql = (
                f"UPDATE {quote(table)} SET {assignments} "
                f"WHERE {quote(column_name(self._concrete(model, 'pk')))} = %s"
            )
            if guard:
                sql += f" AND {guard.format(now=now_sql)}"
            columns: list[tuple[list[Converter], Any]] = []
            if returned:
                for name in returned:
                    column = internals.column(self._concrete(model, name), table)
                    columns.append((self._converters(column), column))
                clock_sql, clock = self._clock(model)
                columns.append(clock)
                back = ", ".join(
                    quote(column_name(self._concrete(model, name))) for name in returned
                )
                sql += f" RETURNING {back}, {clock_sql}"
            writes = [field for field in fields if field.attname not in on_clock]
            compiled = self._cache[key] = (sql, writes, _Select(sql, columns))
        sql, writes, select = compiled
        loaded = instance.__dict__
        for field in writes:
            if field.attname not in loaded and type(field).pre_save is Field.pre_save:
                # A deferred column would be read from the database just to be written.
                raise ValueError(f"{model.__name__}.{field.attname} is written but not loaded")
        params = [field.get_db_prep_save(field.pre_save(instance, False), connection)
                  for field in writes]  # fmt: skip
        params.append(self.prep(model, "pk", instance.pk, connection))
        params.extend(self.prep(model, name, value, connection) for name, value in guard_params)
        return sql, params, select

    def insert(
        self,
        instances: Sequence[Model],
        returning: bool = True,
        then: Callable[[], None] | None = None,
    ) -> None:
        """``bulk_create(instances)`` in one statement; sets an auto primary key on each
        (``returning=False``: leaves it unset, and in a `transaction` does not wait).

        ``then`` is called once the keys are set. In a pipelined `transaction` the keys are
        read after its COMMIT (so reading them costs no round trip of its own), and the
        caller must not need them before; elsewhere they are read, and ``then`` called, at
        once. A field whose value is ``Now()`` takes the database's clock, as with the ORM.
        """
        if not instances:
            if then is not None:
                then()
            return
        auto_pk = internals.auto_key(type(instances[0])) if returning else None
        connection = self.connection
        sql, params = self._insert(instances, auto_pk is not None)
        cursor = self._send(connection, sql, params)
        for instance in instances:
            internals.mark_stored(instance, self.using)

        def keys() -> None:
            try:
                if auto_pk is not None:
                    for instance, (pk,) in zip(instances, cursor.fetchall(), strict=True):
                        setattr(instance, auto_pk.attname, pk)
            finally:
                self._release(cursor)
            if then is not None:
                then()

        later = getattr(self._local, "later", None)
        if later is not None and then is not None:
            later.append(keys)
        else:
            keys()

    def insert_together(self, *groups: Sequence[Model]) -> None:
        """`insert` of each group (no keys read back), all in one statement that commits
        alone where `single` holds (an INSERT whose CTEs insert the groups before it);
        elsewhere one statement per group."""
        groups = tuple(group for group in groups if group)
        if not self.single():
            for group in groups:
                self.insert(group, returning=False)
            return
        parts, params = [], []
        for group in groups:
            sql, group_params = self._insert(group, returning=False)
            parts.append(sql)
            params += group_params
        ctes = ", ".join(f"step_insert{index} AS ({sql})" for index, sql in enumerate(parts[:-1]))
        with self._using_cursor() as cursor:
            cursor.execute(f"WITH {ctes} {parts[-1]}" if ctes else parts[-1], params)
        for group in groups:
            for instance in group:
                internals.mark_stored(instance, self.using)

    def _insert(self, instances: Sequence[Model], returning: bool) -> tuple[str, list[Any]]:
        """`insert`'s statement (``RETURNING`` the auto key, if ``returning`` and there is
        one) and its parameters."""
        model = type(instances[0])
        meta = model._meta
        auto_pk = internals.auto_key(model)
        fields = [f for f in meta.concrete_fields if f is not auto_pk]
        connection = self.connection
        first = instances[0]
        on_clock = tuple(f.attname for f in fields if isinstance(getattr(first, f.attname), Now))
        returning = returning and auto_pk is not None
        key = ("insert", model, on_clock, len(instances), returning)
        compiled = self._cache.get(key)
        if compiled is None:
            quote = internals.quoter(connection)
            now_sql = self._now(model)[0]
            row = ", ".join(now_sql if f.attname in on_clock else "%s" for f in fields)
            names = ", ".join(quote(column_name(f)) for f in fields)
            sql = (
                f"INSERT INTO {quote(meta.db_table)} ({names}) "
                f"VALUES {', '.join(f'({row})' for _ in instances)}"
            )
            if returning and auto_pk is not None:
                sql += f" RETURNING {quote(column_name(auto_pk))}"
            compiled = self._cache[key] = sql
        return compiled, self._values(instances, on_clock, connection)

    def _values(
        self,
        instances: Sequence[Model],
        on_clock: tuple[str, ...],
        connection: BaseDatabaseWrapper,
    ) -> list[Any]:
        """The parameters of an INSERT of ``instances``: each column but an auto key and
        those ``on_clock``, row after row, prepared as the ORM prepares them."""
        params = []
        for instance in instances:
            for field, computed in _writes(type(instance), on_clock):
                value = (
                    field.pre_save(instance, True)
                    if computed
                    else instance.__dict__.get(field.attname, _missing)
                )
                if value is _missing:  # deferred: load it, as pre_save would
                    value = getattr(instance, field.attname)
                params.append(field.get_db_prep_save(value, connection))
        return params


@cache
def statements(using: str) -> Statements:
    """This process's compiled statements on database alias ``using`` (the journal's and
    `result()`'s share them: each statement is compiled once)."""
    return Statements(using)
