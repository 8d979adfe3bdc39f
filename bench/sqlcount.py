"""Counts the SQL statements and commits of each Celery task in a worker, by statement shape.

Installed by bench/celery_app.py only when the worker's environment has BENCH_COUNT_SQL=1
(the database-cost phase): every pool process wraps its Django connection with a
`SqlCounter` and adds its counts to a Redis hash after each task.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

COUNTS_KEY = "bench:sql"
_PARENTHESES = re.compile(r"\([^()]*\)")
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?([A-Za-z_][\w]*)"?', re.IGNORECASE)


_WRITES = re.compile(r'\b(UPDATE|INSERT INTO)\s+"?([A-Za-z_][\w]*)"?', re.IGNORECASE)


def statement_shape(sql: str) -> str:
    """``"SELECT FOR UPDATE continuum_workflowrun"``: the verb, row locks and first table;
    for a statement of data-modifying CTEs (a step's), ``WITH`` and each write in turn."""
    text = sql.lstrip()
    verb = text.split(None, 1)[0].upper() if text else "?"
    upper = text.upper()
    if verb == "WITH":
        writes = [f"{v.split()[0].upper()} {table}" for v, table in _WRITES.findall(text)]
        return " ".join([verb, *writes])
    if verb == "SELECT" and " FOR UPDATE" in upper:
        verb += " FOR UPDATE SKIP LOCKED" if "SKIP LOCKED" in upper else " FOR UPDATE"
    while (outer := _PARENTHESES.sub("", text)) != text:  # drop subqueries and arguments
        text = outer
    match = _TABLE.search(text)
    return f"{verb} {match.group(1)}" if match else verb


class SqlCounter:
    """A Django execute wrapper that counts statements and the transactions that commit.

    A statement outside `atomic()` commits on its own (autocommit) when it writes (a plain
    read commits nothing: it is not counted); the first statement
    inside an atomic block registers an on-commit callback, which Django runs only if the
    outermost block commits, so rolled-back transactions are not counted.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.task = "other"
        self._committed = self._on_commit  # one bound-method object, found again by identity

    def _on_commit(self) -> None:
        self.counts[f"{self.task}|commit|atomic"] += 1

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        connection = context["connection"]
        shape = statement_shape(sql)
        self.counts[f"{self.task}|statement|{shape}"] += 1
        if not connection.in_atomic_block:
            if not shape.startswith("SELECT"):  # a read on its own commits nothing
                self.counts[f"{self.task}|commit|autocommit"] += 1
        elif not any(entry[1] is self._committed for entry in connection.run_on_commit):
            connection.on_commit(self._committed)
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.counts[f"{self.task}|time|statement_us"] += _micros(began)

    def take(self) -> Counter[str]:
        counts, self.counts = self.counts, Counter()
        return counts


def _micros(since: float) -> int:
    return round((time.perf_counter() - since) * 1_000_000)


def install_in_worker() -> None:
    """Count in every pool process of this worker; flush to Redis after each task."""
    import redis
    from celery.signals import task_postrun, task_prerun, worker_process_init
    from django.conf import settings
    from django.db import connections

    counter = SqlCounter()
    client: list[redis.Redis] = []
    task_began = [0.0]

    @worker_process_init.connect(weak=False)
    def _install(**kwargs: Any) -> None:
        connections["default"].execute_wrappers.append(counter)
        client.append(redis.Redis.from_url(settings.BENCH_REDIS_URL))

    @task_prerun.connect(weak=False)
    def _started(task: Any = None, **kwargs: Any) -> None:
        counter.task = getattr(task, "name", "other")
        task_began[0] = time.perf_counter()

    @task_postrun.connect(weak=False)
    def _finished(task: Any = None, **kwargs: Any) -> None:
        counts = counter.take()
        counts[f"{counter.task}|time|task_us"] += _micros(task_began[0])
        counts[f"{counter.task}|tasks|"] += 1
        counter.task = "other"
        if client:
            pipe = client[0].pipeline(transaction=False)
            for key, value in counts.items():
                pipe.hincrby(COUNTS_KEY, key, value)
            pipe.execute()


def read_counts(url: str) -> Counter[str]:
    """The counts all workers flushed so far (and clear them)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline()
        pipe.hgetall(COUNTS_KEY)
        pipe.delete(COUNTS_KEY)
        raw, _ = pipe.execute()
    finally:
        client.close()
    return Counter({key.decode(): int(value) for key, value in raw.items()})
