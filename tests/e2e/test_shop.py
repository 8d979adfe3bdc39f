"""The example shop's views, with its workflow run by a real Celery worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.conf import settings
from django.test import Client

import continuum_django as continuum
from continuum_django.models import ActivityTask, WorkflowRun

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]
ITEMS = [
    {"sku": "book", "qty": 2, "price_cents": 1500},
    {"sku": "pen", "qty": 1, "price_cents": 250},
]


def place(client: Client, order_id: str, items: list[dict[str, Any]] = ITEMS) -> Any:
    return client.post(
        "/orders/", {"order_id": order_id, "items": items}, content_type="application/json"
    )


def activities(run_id: str) -> list[tuple[str, str]]:
    names = ActivityTask.objects.filter(run_id=run_id).order_by("id")
    return [
        (name.rsplit(".", 1)[-1], status)
        for name, status in names.values_list("activity", "status")
    ]


def test_place_approve_ships(worker_factory: StartWorker, client: Client) -> None:
    worker_factory()
    placed = place(client, "flaky-1")  # its card charge fails once, then succeeds
    assert placed.status_code == 202
    run_id = placed.json()["run_id"]
    assert client.post(f"/orders/{run_id}/approve").status_code == 202
    result = continuum.result(run_id, timeout=60)
    assert result == {"status": "shipped", "charge": "ch-flaky-1", "tracking": "TRK-flaky-1"}
    assert activities(run_id) == [
        ("reserve_stock", "completed"),
        ("charge_card", "completed"),
    ]
    shipping = WorkflowRun.objects.get(parent_run_id=run_id)  # the child workflow
    assert (shipping.workflow_name, shipping.status) == ("orders.ship", "completed")
    assert activities(str(shipping.id)) == [("ship_order", "completed")]
    assert ActivityTask.objects.get(run_id=run_id, activity__endswith="charge_card").attempt == 2
    status = client.get(f"/orders/{run_id}").json()
    assert status["status"] == "completed" and status["stage"] == "shipped"
    assert "signal_received" in status["history"] and "child_completed" in status["history"]
    assert status["admin_url"] == f"http://testserver/admin/continuum/workflowrun/{run_id}/change/"


def test_place_reject_refunds(worker_factory: StartWorker, client: Client) -> None:
    worker_factory()
    run_id = place(client, "o-reject").json()["run_id"]
    assert client.post(f"/orders/{run_id}/reject").status_code == 202
    result = continuum.result(run_id, timeout=60)
    assert result == {"status": "refunded", "charge": "ch-o-reject", "refund": "re-ch-o-reject"}
    assert activities(run_id) == [
        ("reserve_stock", "completed"),
        ("charge_card", "completed"),
        ("refund_charge", "completed"),
        ("release_stock", "completed"),
    ]
    assert client.post(f"/orders/{run_id}/approve").status_code == 409  # it has finished


def test_cancel_refunds_and_ends_cancelled(worker_factory: StartWorker, client: Client) -> None:
    worker_factory()
    run_id = place(client, "o-cancel").json()["run_id"]
    wait_until(
        lambda: (
            WorkflowRun.objects.filter(pk=run_id, attributes__stage="awaiting approval")
            .exclude(status="running")
            .exists()
        ),
        what="the order to wait for approval",
    )
    assert client.post(f"/orders/{run_id}/cancel", {"reason": "changed my mind"}).status_code == 202
    with pytest.raises(continuum.WorkflowCancelled):
        continuum.result(run_id, timeout=60)
    assert ("refund_charge", "completed") in activities(run_id)
    assert ("ship_order", "completed") not in activities(run_id)


def test_a_failed_transaction_starts_no_run(client: Client, broker_url: str) -> None:
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queued = broker.llen("continuum")
    refused = place(client, "o-bad", [{"sku": "unicorn", "qty": 1, "price_cents": 1}])
    assert refused.status_code == 400
    assert "does not sell 'unicorn'" in refused.json()["error"]
    assert not WorkflowRun.objects.exists()
    assert broker.llen("continuum") == queued  # nothing was sent to Celery either
    assert place(client, "o-good").status_code == 202  # the same path, committed, does send
    assert WorkflowRun.objects.count() == 1
    assert broker.llen("continuum") == queued + 1
