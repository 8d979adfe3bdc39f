"""Workflows for run deadlines (``options(timeout=...)``): sleepers, a parent, a chain."""

from __future__ import annotations

from typing import Any

from continuum_django import ChildFailed, activity, workflow


@activity(name="tests.deadline.note")
def note(text: str) -> str:
    return text


@workflow(name="tests.deadline.sleeper")
def sleeper(ctx: Any, seconds: float) -> str:
    ctx.sleep(seconds)
    return "woke"


@workflow(name="tests.deadline.quick")
def quick(ctx: Any) -> str:
    return ctx.activity(note, "done")


@workflow(name="tests.deadline.parent")
def parent(ctx: Any, seconds: float) -> str:
    """Starts a sleeping child, then sleeps itself: a deadline ends both."""
    ctx.start_child(sleeper, seconds)
    ctx.sleep(seconds)
    return "woke"


@workflow(name="tests.deadline.parent_of_late_child")
def parent_of_late_child(ctx: Any, timeout: float) -> str:
    """The child has a deadline of its own; the parent hears it time out and goes on."""
    try:
        return ctx.child(sleeper.options(timeout=timeout), 3600)
    except ChildFailed as failure:
        return f"child ended: {failure.error['type']}"


@workflow(name="tests.deadline.chain")
def chain(ctx: Any, step: int) -> str:
    """Continues as new twice, then sleeps: its successors keep the first run's deadline."""
    if step < 2:
        ctx.continue_as_new(step + 1)
    ctx.sleep(3600)
    return "woke"


@workflow(name="tests.deadline.busy")
def busy(ctx: Any) -> str:
    """Waits on an activity (its task stays scheduled in tests that do not run it)."""
    return ctx.activity(note, "busy")


@workflow(name="tests.deadline.parent_with_keyed_child")
def parent_with_keyed_child(ctx: Any) -> str:
    """Gives its child a start option children do not take (refused in the parent)."""
    return ctx.child(sleeper.options(idempotency_key="k"), 1)
