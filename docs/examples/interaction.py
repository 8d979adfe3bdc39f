"""A shopping basket: started by its first item (signal-with-start), its total published.

Run it: ``python docs/examples/interaction.py`` (in-process, on the test kit).
"""

from datetime import timedelta
from typing import Any

from continuum_django import activity, workflow
from continuum_django.testing import WorkflowEnvironment


@activity(name="basket.price")
def price(item: str) -> int:
    return {"apple": 40, "pear": 55}.get(item, 100)


@workflow(name="basket.checkout")
def basket(ctx: Any, customer: str) -> dict[str, Any]:
    items: list[str] = []
    total = 0
    while True:
        item = ctx.wait_signal("add", timeout=timedelta(hours=1), default=None)
        if item is None or item == "checkout":
            break
        items.append(item)
        total += ctx.activity(price, item)
        ctx.publish("basket", {"items": items, "total_cents": total})  # what a view may show
    ctx.publish("stage", "checked out")
    return {"customer": customer, "items": items, "total_cents": total}


if __name__ == "__main__":
    env = WorkflowEnvironment()
    # Every "add to basket" click: start the customer's basket if none, deliver the item.
    # (In a Django view: basket.signal_with_start("add", item, customer, idempotency_key=...).)
    run = env.signal_with_start(basket, "add", "apple", "ada", idempotency_key="basket-ada")
    again = env.signal_with_start(basket, "add", "pear", "ada", idempotency_key="basket-ada")
    assert again.id == run.id  # the same run: the key names it
    print("state:", run.state)  # read from the run, no replay
    run.signal("add", "checkout")
    print("result:", run.result())
    print("stage:", run.state["stage"])
