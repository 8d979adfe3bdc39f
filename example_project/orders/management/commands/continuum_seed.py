"""`manage.py continuum_seed`: a few orders in different states, to look at in the admin.

The runs are driven in this process through the same runtime the Celery tasks use, so
no worker needs to run; a worker that does run meanwhile only shares the work.
"""

import time
import uuid
from collections.abc import Callable
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db.models.functions import Now

import continuum_django as continuum
from continuum_django.models import WorkflowRun
from continuum_django.worker import runtime

from ...workflows import fulfil_order

ITEMS = [
    {"sku": "book", "qty": 1, "price_cents": 1500},
    {"sku": "mug", "qty": 2, "price_cents": 900},
]
EXPENSIVE = [{"sku": "poster", "qty": 1000, "price_cents": 5000}]


def drive(run_id: str, done: Callable[[WorkflowRun], bool], timeout: float = 30.0) -> None:
    """Advance the run (and its children) and run their due activities until ``done(run)``."""
    engine = runtime()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engine.sweep()  # fires due timers
        family = [
            run_id,
            *WorkflowRun.objects.filter(parent_run_id=run_id).values_list("id", flat=True),
        ]
        for member in family:  # the run and its child workflows (shipping)
            engine.advance_run(str(member))
            run = continuum.get_run(member)
            for task in run.activity_tasks.filter(status="scheduled", next_attempt_at__lte=Now()):
                engine.execute_activity(task.id)
        run = continuum.get_run(run_id)
        if done(run):
            return
        time.sleep(0.1)
    raise CommandError(f"run {run_id} did not get there within {timeout:.0f}s")


def finished(run: WorkflowRun) -> bool:
    return run.is_terminal


def awaiting_approval(run: WorkflowRun) -> bool:
    return run.status == "suspended" and run.attributes.get("stage") == "awaiting approval"


class Command(BaseCommand):
    help = "Seed the example shop with orders in several states (shipped, refunded, ...)."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        tag = uuid.uuid4().hex[:6]

        def order(name: str, items: list[dict[str, Any]] = ITEMS) -> str:
            order_id = f"{name}-{tag}"
            return (
                fulfil_order.options(
                    idempotency_key=f"order-{order_id}",
                    namespace="shop",
                    attributes={"order_id": order_id, "customer": f"c-{name}"},
                )
                .start(order_id, items)
                .id
            )  # type: ignore[no-any-return]

        shipped = order("flaky-shipped")  # its first charge attempt fails, then it ships
        continuum.signal(shipped, "approval", "approved")
        drive(shipped, finished)

        refunded = order("rejected")
        continuum.signal(refunded, "approval", "rejected")
        drive(refunded, finished)

        waiting = order("waiting")
        drive(waiting, awaiting_approval)

        cancelled = order("cancelled")
        drive(cancelled, awaiting_approval)
        continuum.cancel(cancelled, reason="the customer changed their mind")
        drive(cancelled, finished)

        declined = order("declined", EXPENSIVE)
        drive(declined, finished)

        pending = order("pending")  # left for a worker to pick up

        for name, run_id in [
            ("shipped", shipped),
            ("refunded", refunded),
            ("awaiting approval", waiting),
            ("cancelled", cancelled),
            ("declined (failed)", declined),
            ("pending", pending),
        ]:
            status = continuum.get_run(run_id).status
            self.stdout.write(
                f"{name:<20} {status:<10} /admin/continuum/workflowrun/{run_id}/change/"
            )
