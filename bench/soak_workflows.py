"""The soak's workflows: together they use every feature, and each result is known in advance.

Every activity body appends one line (idempotency key, attempt, pid, time) to the file
named by ``SOAK_BODY_LOG`` before it does anything else, so the soak can count the bodies
that ran more than once for one command.
"""

from __future__ import annotations

import os
import time
from typing import Any

from continuum_django import ActivityContext, CancellationRequested, RetryPolicy, activity, workflow

# Kills consume attempts (a crash in the middle of an activity counts as one): ten leave room.
PATIENT = RetryPolicy(
    max_attempts=10, initial_interval=0.2, backoff_coefficient=2.0, max_interval=2.0
)
PARALLEL = 3


def chain_links(i: int) -> int:
    """How many times run ``i`` continues as new before doing its real work."""
    return 2 if i % 10 == 0 else 0


def is_flaky(i: int) -> bool:
    """Whether run ``i``'s flaky activity fails its first attempt (deterministically)."""
    return i % 3 == 0


def sleeps(i: int) -> bool:
    return i % 2 == 0


def has_child(i: int) -> bool:
    return i % 4 == 0


def compensates(i: int) -> bool:
    return i % 5 == 0


def expected(i: int) -> dict[str, Any]:
    """The result run ``i`` must end with (its chain's tip, when it continues as new)."""
    total = 7 * i + sum(i + k for k in range(PARALLEL)) + 2 * i + (2 * i if has_child(i) else 0)
    return {"i": i, "sum": total, "go": {"i": i}, "compensated": compensates(i)}


def log_body(context: ActivityContext) -> None:
    """Append this body's execution to the soak's log: one short O_APPEND write, atomic."""
    path = os.environ.get("SOAK_BODY_LOG")
    if not path:
        return
    line = f"{context.idempotency_key}\t{context.attempt}\t{os.getpid()}\t{time.time():.3f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@activity(name="soak.link", retry=PATIENT)
def link(i: int, number: int, *, activity_context: ActivityContext) -> int:
    log_body(activity_context)
    return number


@activity(name="soak.add", retry=PATIENT)
def add(i: int, k: int, *, activity_context: ActivityContext) -> int:
    log_body(activity_context)
    return i + k


@activity(name="soak.flaky", retry=PATIENT)
def flaky(i: int, *, activity_context: ActivityContext) -> int:
    log_body(activity_context)
    if is_flaky(i) and activity_context.attempt == 1:
        raise RuntimeError(f"soak: run {i}'s first attempt fails on purpose")
    return 2 * i


@activity(name="soak.reserve", retry=PATIENT)
def reserve(i: int, *, activity_context: ActivityContext) -> str:
    log_body(activity_context)
    return f"r-{i}"


@activity(name="soak.release", retry=PATIENT)
def release(reservation: str, *, activity_context: ActivityContext) -> str:
    log_body(activity_context)
    return f"released {reservation}"


@activity(name="soak.double", retry=PATIENT)
def double(i: int, *, activity_context: ActivityContext) -> int:
    log_body(activity_context)
    return 2 * i


@workflow(name="soak.child")
def child(ctx: Any, i: int) -> int:
    return ctx.activity(double, i)


@workflow(name="soak.order")
def order(ctx: Any, i: int, number: int = 0) -> dict[str, Any]:
    """Run ``i`` of the soak; ``number`` counts the links of its continue_as_new chain."""
    if number < chain_links(i):
        ctx.activity(link, i, number)
        ctx.continue_as_new(i, number + 1)
    try:
        base = ctx.side_effect(lambda: 7 * i)
        parts = ctx.wait_all(*[ctx.start_activity(add, i, k) for k in range(PARALLEL)])
        total = base + sum(parts) + ctx.activity(flaky, i)
        reservation = ctx.activity(reserve, i)
        ctx.on_rollback(release, reservation)
        if sleeps(i):
            ctx.sleep(1)
        if has_child(i):
            total += ctx.child(child, i)
        go = ctx.wait_signal("go")
        if compensates(i) and ctx.compensate():
            raise RuntimeError(f"soak: run {i}'s compensation failed")
        return {"i": i, "sum": total, "go": go, "compensated": compensates(i)}
    except CancellationRequested:
        ctx.compensate()
        raise
