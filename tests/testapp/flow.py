"""Workflows and activities with flow-control limits (tests/django/test_flow_control.py and
tests/e2e/test_flow_control.py)."""

from __future__ import annotations

import time
from typing import Any

from django.db import connection

from continuum_django import activity, workflow

# The e2e tests' record of each attempt's start and end (created by the tests).
INTERVALS = "flow_intervals"


def _record(label: str, key: str, pause: float) -> None:
    """Record when this attempt ran, on the database's clock, for the tests to compare."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {INTERVALS} (label, key, started) VALUES (%s, %s, clock_timestamp())"
            " RETURNING id",
            [label, key],
        )
        (row,) = cursor.fetchone()
    if pause:
        time.sleep(pause)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {INTERVALS} SET ended = clock_timestamp() WHERE id = %s", [row])


@activity(name="flow.charge", concurrency=1, concurrency_key="customer_id")
def charge(customer_id: str, amount: int, pause: float = 0.0) -> int:
    _record("charge", customer_id, pause)
    return amount


@activity(name="flow.by_tenant", concurrency=2, concurrency_key=lambda order: order["tenant"])
def by_tenant(order: dict[str, Any]) -> str:
    return str(order["tenant"])


@activity(name="flow.rated", rate_limit="10/s")
def rated(n: int) -> int:
    _record("rated", "", 0.0)
    return n


@activity(name="flow.serial", concurrency=1)
def serial(label: str) -> str:
    _record("serial", label, 0.0)
    return label


@workflow(name="tests.flow.charge")
def charge_customer(ctx: Any, customer_id: str, amount: int, pause: float = 0.0) -> int:
    return ctx.activity(charge, customer_id, amount, pause)  # type: ignore[no-any-return]


@workflow(name="tests.flow.tenant")
def tenant_order(ctx: Any, tenant: str) -> str:
    return ctx.activity(by_tenant, {"tenant": tenant})  # type: ignore[no-any-return]


@workflow(name="tests.flow.rated")
def rated_run(ctx: Any, n: int, rate: str = "10/s") -> int:
    return ctx.activity(rated.with_options(rate_limit=rate), n)  # type: ignore[no-any-return]


@workflow(name="tests.flow.serial")
def serial_run(ctx: Any, label: str, priority: int) -> str:
    return ctx.activity(serial.with_options(priority=priority), label)  # type: ignore[no-any-return]
