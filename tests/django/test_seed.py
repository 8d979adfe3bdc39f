"""`manage.py continuum_seed` leaves the shop's orders in the states the admin demo shows."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from continuum_django.models import WorkflowRun

pytestmark = pytest.mark.django_db


def test_seed_leaves_orders_in_several_states() -> None:
    out = io.StringIO()
    call_command("continuum_seed", stdout=out)
    runs = WorkflowRun.objects.filter(namespace="shop", parent_run__isnull=True)  # not children
    by_customer = {run.attributes["customer"]: run for run in runs}
    assert by_customer["c-flaky-shipped"].result["status"] == "shipped"
    assert by_customer["c-rejected"].result["status"] == "refunded"
    assert by_customer["c-waiting"].status == "suspended"
    assert by_customer["c-cancelled"].status == "cancelled"
    assert by_customer["c-declined"].status == "failed"
    assert "card declined" in by_customer["c-declined"].error["message"]
    assert by_customer["c-pending"].status == "pending"
    assert "/admin/continuum/workflowrun/" in out.getvalue()
