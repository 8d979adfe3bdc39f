"""Order fulfilment: reserve stock, charge, wait for approval, ship."""

import logging
from datetime import timedelta
from typing import Any

from continuum_django import RetryPolicy, WorkflowContext, activity, workflow

logger = logging.getLogger(__name__)


@activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.5))
def reserve_stock(order_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Reserve every line of the order and price it."""
    total_cents = sum(int(item["qty"]) * int(item["price_cents"]) for item in items)
    logger.info("reserved %d lines for order %s", len(items), order_id)
    return {"reservation": f"res-{order_id}", "total_cents": total_cents}


@activity
def charge_card(order_id: str, amount_cents: int) -> dict[str, Any]:
    """Charge the customer (a stand-in for a payment gateway)."""
    logger.info("charged %d cents for order %s", amount_cents, order_id)
    return {"id": f"ch-{order_id}", "amount_cents": amount_cents}


@activity
def ship_order(order_id: str) -> dict[str, Any]:
    """Hand the parcel to the carrier (a stand-in for a shipping API)."""
    logger.info("shipped order %s", order_id)
    return {"tracking": f"TRK-{order_id}"}


@workflow(name="orders.fulfil")
def fulfil_order(
    ctx: WorkflowContext, order_id: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    reservation = ctx.activity(reserve_stock, order_id, items)
    charge = ctx.activity(charge_card, order_id, reservation["total_cents"])
    # Nobody answering within ten minutes counts as an approval.
    decision = ctx.wait_signal("approval", timeout=timedelta(minutes=10), default="approved")
    if decision == "rejected":
        return {"status": "rejected", "charge": charge["id"]}
    ctx.sleep(1)
    shipment = ctx.activity(ship_order, order_id)
    return {"status": "shipped", "charge": charge["id"], "tracking": shipment["tracking"]}
