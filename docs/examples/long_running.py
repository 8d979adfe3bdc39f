"""A subscription that bills every 30 days, forever, with a bounded history.

Run it: ``python docs/examples/long_running.py`` (in-process; the fake clock skips the waits).
"""

from datetime import timedelta
from typing import Any

from continuum_django import activity, workflow
from continuum_django.engine.local import LocalRunner


@activity(name="billing.bill")
def bill(customer: str, period: int) -> str:
    return f"bill {period} for {customer}"


@workflow(name="billing.subscription")
def subscription(ctx: Any, customer: str, period: int = 1) -> str:
    ctx.activity(bill, customer, period)
    if ctx.wait_signal("cancel", timeout=timedelta(days=30), default=None) is not None:
        return f"cancelled after {period} periods"
    if period >= 3:  # the example stops after three periods; a real one would go on
        return "example finished"
    ctx.continue_as_new(customer, period + 1)  # a new run, a fresh history, the same chain


if __name__ == "__main__":
    runner = LocalRunner()
    run_id = runner.start(subscription, "ada")
    runner.run_until_idle()
    runs = list(runner.journal.runs.values())
    print([(r.status, len(r.events)) for r in runs])
    print(runs[-1].result)
