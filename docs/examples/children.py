"""Fan out to child workflows and fan their results back in.

Run it: ``python docs/examples/children.py`` (in-process, no database or broker needed).
"""

from typing import Any

from continuum_django import ChildFailed, activity, workflow
from continuum_django.engine.local import LocalRunner


@activity(name="invoices.render")
def render(customer: str) -> str:
    if customer == "nobody":
        raise ValueError("no such customer")
    return f"invoice for {customer}"


@workflow(name="invoices.one")
def invoice_one(ctx: Any, customer: str) -> str:
    return ctx.activity(render, customer)


@workflow(name="invoices.month")
def invoice_month(ctx: Any, customers: list[str]) -> dict[str, Any]:
    handles = [ctx.start_child(invoice_one, c) for c in customers]  # all start at once
    done, failed = [], []
    for customer, handle in zip(customers, handles, strict=True):
        try:
            done.append(handle.result())
        except ChildFailed as failure:  # a child's failure is an ordinary, catchable error
            failed.append(f"{customer}: {failure.error['message']}")
    return {"done": done, "failed": failed}


if __name__ == "__main__":
    runner = LocalRunner()
    run_id = runner.start(invoice_month, ["ada", "grace", "nobody"])
    runner.run_until_idle()
    print(runner.journal.runs[run_id].result)
