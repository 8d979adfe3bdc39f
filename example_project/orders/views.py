"""JSON views of the shop: place an order, approve, reject or cancel it, look at it."""

import json
import uuid
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import continuum_django as continuum

from .workflows import fulfil_order

# What the shop sells; an order naming anything else is refused.
CATALOGUE = {"book", "pen", "mug", "poster"}


class OrderRefused(Exception):
    pass


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _check_catalogue(items: list[Any]) -> None:
    for item in items:
        sku = item.get("sku") if isinstance(item, dict) else None
        if sku not in CATALOGUE:
            raise OrderRefused(f"the shop does not sell {sku!r}")


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    """Start fulfilment of `{"order_id", "customer", "items": [{"sku", "qty", "price_cents"}]}`."""
    try:
        body: Any = json.loads(request.body or b"{}")
    except RecursionError:
        return _error("the body is nested too deeply", 400)
    except ValueError:  # not JSON, not UTF-8, or an int past Python's digit limit
        return _error("the body must be JSON", 400)
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        return _error("'items' must be a non-empty list", 400)
    order_id, customer = body.get("order_id"), body.get("customer")
    if not isinstance(order_id or "", str | int) or not isinstance(customer or "", str):
        return _error("'order_id' must be a string or a number, 'customer' a string", 400)
    order_id = str(order_id or uuid.uuid4().hex[:12])
    customer = customer or "guest"
    try:
        with transaction.atomic():
            # The run is written in this transaction and sent to Celery only on commit.
            run = fulfil_order.options(
                idempotency_key=f"order-{order_id}",
                namespace="shop",
                attributes={"order_id": order_id, "customer": customer},
            ).start(order_id, items)
            # Checked after the start, as the rest of a real order's rows would be written:
            # a failure here rolls the whole transaction back, the run included.
            _check_catalogue(items)
    except (OrderRefused, continuum.PayloadError, ValueError) as exc:
        # A refused order or a value the journal cannot hold (too deep, too large, a NUL
        # character, an over-long id): nothing was written, nothing sent to a worker.
        return _error(str(exc), 400)
    return JsonResponse({"order_id": order_id, "run_id": str(run.id)}, status=202)


@csrf_exempt
@require_POST
def decide(request: HttpRequest, run_id: uuid.UUID, decision: str) -> JsonResponse:
    """Deliver the reviewer's decision ("approved" or "rejected") to the run."""
    try:
        continuum.signal(run_id, "approval", decision)
    except continuum.RunNotFound:
        return _error(f"no order run {run_id}", 404)
    except continuum.RunNotActive:
        return _error(f"order run {run_id} has already finished", 409)
    return JsonResponse({"run_id": str(run_id), "decision": decision}, status=202)


@csrf_exempt
@require_POST
def cancel(request: HttpRequest, run_id: uuid.UUID) -> JsonResponse:
    """Cancel the order: the workflow refunds and releases what it holds, then ends."""
    reason = request.POST.get("reason") or "cancelled by the customer"
    try:
        continuum.cancel(run_id, reason=reason)
    except ValueError as exc:  # a reason too long, or holding a NUL character
        return _error(str(exc), 400)
    except continuum.RunNotFound:
        return _error(f"no order run {run_id}", 404)
    except continuum.RunNotActive:
        return _error(f"order run {run_id} has already finished", 409)
    return JsonResponse({"run_id": str(run_id), "cancelling": True}, status=202)


@require_GET
def order_status(request: HttpRequest, run_id: uuid.UUID) -> JsonResponse:
    """The run's status, its history (event types), its outcome, and where to see it all."""
    try:
        run = continuum.get_run(run_id)
    except continuum.RunNotFound:
        return _error(f"no order run {run_id}", 404)
    admin_path = reverse("admin:continuum_workflowrun_change", args=[run.id])
    return JsonResponse(
        {
            "run_id": str(run.id),
            "workflow": run.workflow_name,
            "status": run.status,
            "stage": run.attributes.get("stage", ""),
            "history": [str(event.type) for event in continuum.RunHandle(str(run.id)).history()],
            "result": run.result,
            "error": run.error,
            "admin_url": request.build_absolute_uri(admin_path),
        }
    )
