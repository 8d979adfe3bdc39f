"""Workflows of the transactional activities: bodies that write rows, fail, conflict or block."""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction

from continuum_django import ActivityFailed, RetryPolicy, activity, workflow

from .models import LedgerEntry

# Retries wait a minute: tests make them due in the database rather than race the clock.
# How many times each order's body has started in this process (kept outside the database,
# so a rolled-back try still counts).
tries: dict[str, int] = {}
# The orders whose `book` committed, appended by its `transaction.on_commit` callback.
committed: list[str] = []


@activity(
    name="tests.txn.book",
    transactional=True,
    retry=RetryPolicy(max_attempts=2, initial_interval=60.0, jitter=0.0),
)
def book(
    order: str, amount: int, fail: bool = False, conflicts: int = 0, hold: int | None = None
) -> int:
    """Write a ledger row. Then: ``fail`` raises; the first ``conflicts`` tries end in a
    real serialization failure raised by Postgres; ``hold`` waits for that advisory lock
    (a test holds it to stop the body half-way)."""
    tries[order] = tries.get(order, 0) + 1
    LedgerEntry.objects.create(order=order, amount=amount)
    transaction.on_commit(lambda: committed.append(order))
    with connection.cursor() as cursor:
        if tries[order] <= conflicts:
            cursor.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure';"
                " END $$"
            )
        if hold is not None:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [hold])
    if fail:
        raise ValueError(f"booking {order} failed after its write")
    return LedgerEntry.objects.filter(order=order).count()


@workflow(name="tests.txn.booking")
def booking(
    ctx: Any, order: str, amount: int, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Book ``amount`` for ``order`` (``options``: `book`'s keyword arguments)."""
    try:
        count = ctx.activity(book, order, amount, **(options or {}))
    except ActivityFailed as exc:
        return {"failed": str(exc)}
    return {"count": count}


@activity(
    name="tests.txn.count",
    transactional=True,
    retry=RetryPolicy(max_attempts=2, initial_interval=60.0, jitter=0.0),
)
def count(key: str, fail: bool = False) -> int:
    """No database of its own: the journal contract's transactional body."""
    tries[key] = tries.get(key, 0) + 1
    if fail:
        raise ValueError(f"{key} failed")
    return tries[key]


@workflow(name="tests.txn.counting")
def counting(ctx: Any, key: str, fail: bool = False) -> dict[str, Any]:
    try:
        return {"count": ctx.activity(count, key, fail)}
    except ActivityFailed as exc:
        return {"failed": str(exc)}


@activity(name="tests.txn.transfer", transactional=True)
def transfer(source: int, target: int, amount: int) -> list[int]:
    """Move ``amount`` between two ledger rows, locking the source first, then the target."""
    key = f"transfer-{source}"
    tries[key] = tries.get(key, 0) + 1
    debit = LedgerEntry.objects.select_for_update().get(pk=source)
    credit = LedgerEntry.objects.select_for_update().get(pk=target)
    debit.amount -= amount
    credit.amount += amount
    debit.save(update_fields=["amount"])
    credit.save(update_fields=["amount"])
    return [debit.amount, credit.amount]


@workflow(name="tests.txn.transferring")
def transferring(ctx: Any, source: int, target: int, amount: int) -> list[int]:
    return ctx.activity(transfer, source, target, amount)  # type: ignore[no-any-return]
