"""Transactional activities: the ledger row and the journaled result commit together.

Run it: ``python docs/examples/transactional.py`` (SQLite in memory, no broker needed: the
ORM journal is driven in-process, the way a Celery worker drives it).
"""

from typing import Any

import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "continuum_django"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=True,
    SECRET_KEY="example only",
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from continuum_django import ActivityFailed, RetryPolicy, activity, workflow  # noqa: E402
from continuum_django.engine.local import LocalDispatcher, new_run  # noqa: E402
from continuum_django.engine.runtime import Runtime  # noqa: E402
from continuum_django.journal import OrmJournal  # noqa: E402


@activity(name="shop.book_payment", transactional=True, retry=RetryPolicy(max_attempts=1))
def book_payment(order_id: str, amount_cents: int) -> int:
    """Write the ledger row; its commit is the activity's completion."""
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO ledger VALUES (%s, %s)", [order_id, amount_cents])
        cursor.execute("SELECT count(*) FROM ledger WHERE order_id = %s", [order_id])
        (rows,) = cursor.fetchone()
    # After-commit effects (an e-mail, a message) wait for the commit, then run once.
    transaction.on_commit(lambda: print(f"  committed: {order_id} booked {amount_cents}"))
    if amount_cents <= 0:
        raise ValueError(f"cannot book {amount_cents} cents")  # rolls the row back too
    return int(rows)


@workflow(name="shop.checkout")
def checkout(ctx: Any, order_id: str, amount_cents: int) -> dict[str, Any]:
    try:
        rows = ctx.activity(book_payment, order_id, amount_cents)
    except ActivityFailed as failed:
        return {"order": order_id, "status": "refused", "why": failed.error_message}
    return {"order": order_id, "status": "booked", "ledger_rows": rows}


def run(journal: OrmJournal, order_id: str, amount_cents: int) -> Any:
    """Drive one run to its end in this process (a worker would take each hint from Celery)."""
    hints = LocalDispatcher()
    runtime = Runtime(journal=journal, dispatcher=hints, worker_id="example")
    run_id, _, dispatch = journal.create_run(new_run(checkout, [order_id, amount_cents]))
    hints.send(dispatch)
    while hints.pending:
        kind, target, _ = hints.pending.pop(0)
        if kind == "run":
            runtime.advance_run(target)
        else:
            runtime.execute_activity(target)
    return journal.history(run_id)[-1].payload["result"]


if __name__ == "__main__":
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE ledger (order_id TEXT, amount_cents INTEGER)")
    journal = OrmJournal("default")
    print(run(journal, "o-1", 4200))
    print(run(journal, "o-2", 0))
    with connection.cursor() as cursor:
        cursor.execute("SELECT order_id, amount_cents FROM ledger ORDER BY order_id")
        print("ledger:", cursor.fetchall())  # o-2's row was rolled back with its failure
