"""Workflows with start limits (tests/django/test_start_flow.py, tests/e2e/test_start_flow.py)."""

from __future__ import annotations

from typing import Any

from continuum_django import activity, workflow
from continuum_django.engine.context import WorkflowContext

from .flow import _record

# The label the e2e test's runs record their entry and exit under (`flow.INTERVALS`).
BRIEF = "startflow.brief"


def _held(ctx: WorkflowContext) -> None:
    """Stay live until signalled "go"; "fail" fails the run."""
    if ctx.wait_signal("go") == "fail":
        raise ValueError("asked to fail")


@workflow(name="startflow.per_customer", concurrency=1, concurrency_key="customer")
def per_customer(ctx: WorkflowContext, customer: str, n: int = 0) -> int:
    _held(ctx)
    return n


@workflow(name="startflow.by_region", concurrency=2, concurrency_key=lambda order: order["region"])
def by_region(ctx: WorkflowContext, order: dict[str, Any]) -> str:
    _held(ctx)
    return str(order["region"])


@workflow(name="startflow.serial", concurrency=1)
def serial(ctx: WorkflowContext, label: str) -> str:
    _held(ctx)
    return label


@workflow(name="startflow.chain", concurrency=1, concurrency_key="customer")
def chain(ctx: WorkflowContext, customer: str, left: int) -> int:
    _held(ctx)
    if left:
        ctx.continue_as_new(customer, left - 1)
    return left


@workflow(name="startflow.parent")
def parent(ctx: WorkflowContext, customer: str) -> int:
    return ctx.child(per_customer, customer, 7)


@activity(name="startflow.mark")
def mark(label: str, customer: str) -> None:
    _record(label, customer, 0.0)


@workflow(name=BRIEF, concurrency=1, concurrency_key="customer")
def brief(ctx: WorkflowContext, customer: str, n: int) -> int:
    """Marks its entry, waits briefly, marks its exit: no two of a customer in between."""
    ctx.activity(mark, f"{BRIEF}.in", customer)
    ctx.sleep(0.2)
    ctx.activity(mark, f"{BRIEF}.out", customer)
    return n
