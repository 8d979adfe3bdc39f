"""JSON views of the shop: place an order, approve or reject it, look at it."""

import json
import uuid
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import continuum_django as continuum

from .workflows import fulfil_order


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    """Start fulfilment of `{"order_id": ..., "items": [{"sku", "qty", "price_cents"}]}`."""
    try:
        body: Any = json.loads(request.body or b"{}")
    except json.JSONDecodeError:
        return _error("the body must be JSON", 400)
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        return _error("'items' must be a non-empty list", 400)
    order_id = str(body.get("order_id") or uuid.uuid4().hex[:12])
    with transaction.atomic():
        # The run is written in this transaction and dispatched to Celery only on commit:
        # had anything here rolled back, no workflow would have started.
        run = fulfil_order.options(idempotency_key=f"order-{order_id}").start(order_id, items)
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


@require_GET
def order_status(request: HttpRequest, run_id: uuid.UUID) -> JsonResponse:
    """The run's status, its history (event types) and, once finished, its outcome."""
    try:
        run = continuum.get_run(run_id)
    except continuum.RunNotFound:
        return _error(f"no order run {run_id}", 404)
    return JsonResponse(
        {
            "run_id": str(run.id),
            "workflow": run.workflow_name,
            "status": run.status,
            "history": [str(event.type) for event in continuum.RunHandle(str(run.id)).history()],
            "result": run.result,
            "error": run.error,
        }
    )
