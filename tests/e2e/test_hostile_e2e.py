"""A hostile order through the shop, with a real worker running: refused, and no worker hurt."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.conf import settings
from django.test import Client

import continuum_django as continuum
from continuum_django.models import WorkflowRun

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
ITEMS = [{"sku": "book", "qty": 2, "price_cents": 1500}]


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_a_480_deep_order_is_refused_and_the_worker_keeps_working(
    worker_factory: Callable[..., WorkerProcess], client: Client
) -> None:
    worker = worker_factory()
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queued = broker.llen("continuum")

    # Before the codec's depth limit, this order was accepted (202) and its first advance
    # message killed every worker that took it: RecursionError pickling it for the pool.
    hostile = {"order_id": "o-deep", "items": [*ITEMS, {"sku": "book", "note": nested(480)}]}
    refused = client.post("/orders/", json.dumps(hostile), content_type="application/json")
    assert refused.status_code == 400
    assert "nested deeper than 64 levels" in refused.json()["error"]
    assert not WorkflowRun.objects.exists()
    assert broker.llen("continuum") == queued  # nothing was sent to a worker

    placed = client.post(
        "/orders/", {"order_id": "o-after", "items": ITEMS}, content_type="application/json"
    )
    assert placed.status_code == 202
    run_id = placed.json()["run_id"]
    assert client.post(f"/orders/{run_id}/approve").status_code == 202
    result = continuum.result(run_id, timeout=60)
    assert result["status"] == "shipped"
    assert worker.running
    assert "RecursionError" not in worker.log() and "WorkerLostError" not in worker.log()
