"""Order fulfilment: reserve stock, charge, wait for approval, ship — or undo on the way out.

A saga: each step that changed something registers its undo (``ctx.on_rollback``); a
rejected, declined or cancelled order runs them newest first (``ctx.compensate``).
Shipping is a child workflow with its own packing timer.
"""

import logging
from datetime import timedelta
from typing import Any

from continuum_django import (
    ActivityContext,
    ActivityFailed,
    CancellationRequested,
    NonRetryableError,
    RetryPolicy,
    WorkflowContext,
    activity,
    workflow,
)

logger = logging.getLogger(__name__)

# Orders above this total are declined by the (pretend) card processor.
CARD_LIMIT_CENTS = 1_000_000


@activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.5))
def reserve_stock(order_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Reserve every line of the order and price it."""
    total_cents = sum(int(item["qty"]) * int(item["price_cents"]) for item in items)
    logger.info("reserved %d lines for order %s", len(items), order_id)
    return {"reservation": f"res-{order_id}", "total_cents": total_cents}


@activity(
    retry=RetryPolicy(max_attempts=4, initial_interval=0.2, backoff_coefficient=2.0),
    timeout=timedelta(seconds=30),
)
def charge_card(
    order_id: str, amount_cents: int, activity_context: ActivityContext
) -> dict[str, Any]:
    """Charge the customer (a stand-in for a payment gateway).

    The idempotency key is what a real gateway would get, so a retried attempt never
    charges twice. Orders named ``flaky-...`` meet a gateway time-out on their first
    attempt, to show a retry; orders over the card limit are declined for good.
    """
    if amount_cents > CARD_LIMIT_CENTS:
        raise NonRetryableError(f"card declined: {amount_cents} cents is over the limit")
    if order_id.startswith("flaky") and activity_context.attempt == 1:
        raise ConnectionError("the payment gateway timed out")
    logger.info("charged %d cents for order %s", amount_cents, order_id)
    return {
        "id": f"ch-{order_id}",
        "amount_cents": amount_cents,
        "idempotency_key": activity_context.idempotency_key,
    }


@activity
def refund_charge(charge_id: str) -> dict[str, Any]:
    """Give the money back (a stand-in for the gateway's refund call)."""
    logger.info("refunded %s", charge_id)
    return {"refund": f"re-{charge_id}"}


@activity
def release_stock(reservation: str) -> None:
    """Put the reserved items back on the shelf."""
    logger.info("released %s", reservation)


@activity
def ship_order(order_id: str) -> dict[str, Any]:
    """Hand the parcel to the carrier (a stand-in for a shipping API)."""
    logger.info("shipped order %s", order_id)
    return {"tracking": f"TRK-{order_id}"}


@workflow(name="orders.ship")
def ship(ctx: WorkflowContext, order_id: str) -> dict[str, Any]:
    """Wait for the warehouse's packing slot, then hand the parcel to the carrier."""
    ctx.sleep(1)
    return ctx.activity(ship_order, order_id)


@workflow(name="orders.fulfil", signals={"approval": str})
def fulfil_order(
    ctx: WorkflowContext, order_id: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    reservation = ctx.activity(reserve_stock, order_id, items)
    ctx.on_rollback(release_stock, reservation["reservation"])
    try:
        charge = ctx.activity(charge_card, order_id, reservation["total_cents"])
        ctx.on_rollback(refund_charge, charge["id"])
        ctx.set_attributes(stage="awaiting approval")
        # Nobody answering within ten minutes counts as an approval.
        decision = ctx.wait_signal("approval", timeout=timedelta(minutes=10), default="approved")
        if decision == "rejected":
            ctx.compensate()  # refund, then release the stock
            ctx.set_attributes(stage="refunded")
            return {"status": "refunded", "charge": charge["id"], "refund": f"re-{charge['id']}"}
        ctx.set_attributes(stage="packing")
        shipment = ctx.child(ship, order_id)
    except (ActivityFailed, CancellationRequested):
        # Declined, out of retries, or cancelled: undo what was done, then end the same way.
        ctx.compensate()
        raise
    ctx.set_attributes(stage="shipped")
    return {"status": "shipped", "charge": charge["id"], "tracking": shipment["tracking"]}
