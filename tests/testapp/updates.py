"""Workflows that take update requests and answer them (tests of `continuum_django.update`)."""

from __future__ import annotations

from typing import Any

from continuum_django import workflow

from .workflows import blocking_step


@workflow(name="tests.updates.counter")
def counter(ctx: Any, limit: int) -> int:
    """Adds each ``add`` update's amount and replies with the total, until it reaches ``limit``."""
    total = 0
    while total < limit:
        request = ctx.wait_update("add")
        if not isinstance(request.payload, int):
            request.reject(f"{request.payload!r} is not a whole number")
            continue
        total += request.payload
        request.reply(total)
    return total


@counter.update_validator("add")
def _no_negative_amounts(amount: Any) -> None:
    if isinstance(amount, int) and amount < 0:
        raise ValueError(f"amounts must not be negative, not {amount}")


@workflow(name="tests.updates.unanswered")
def unanswered(ctx: Any) -> Any:
    """Takes an ``ask`` request and never answers it; ends on the ``finish`` signal."""
    request = ctx.wait_update("ask")
    ctx.wait_signal("finish")
    return request.payload


@workflow(name="tests.updates.patient")
def patient(ctx: Any, seconds: float) -> str:
    """Waits ``seconds`` for an ``ask`` request; answers it, or says none came."""
    request = ctx.wait_update("ask", timeout=seconds)
    if request is None:
        return "no request"
    request.reply("yes")
    return "answered"


@workflow(name="tests.updates.reply_then_block")
def reply_then_block(ctx: Any, marker_dir: str) -> dict[str, Any]:
    """Replies, then runs an activity whose first attempt blocks until its worker is killed."""
    request = ctx.wait_update("ask")
    request.reply({"echo": request.payload})
    attempt = ctx.activity(blocking_step, marker_dir)
    return {"asked": request.payload, "attempt": attempt}


@workflow(name="tests.updates.answers_twice")
def answers_twice(ctx: Any) -> str:
    """Tries to answer one request twice: the second answer is refused."""
    request = ctx.wait_update("ask")
    request.reply(1)
    request.reject("changed my mind")
    return "unreachable"


@workflow(name="tests.updates.rolling")
def rolling(ctx: Any, seen: int) -> int:
    """Answers one ``bump`` per run of its continue_as_new chain, three in all."""
    request = ctx.wait_update("bump")
    request.reply(seen + 1)
    if seen + 1 >= 3:
        return seen + 1
    ctx.continue_as_new(seen + 1)
