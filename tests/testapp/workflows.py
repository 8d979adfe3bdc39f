"""Workflows and activities the test suite runs, in-process and in real worker processes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from continuum_django import (
    ActivityContext,
    ActivityFailed,
    CancellationRequested,
    ChildFailed,
    NonRetryableError,
    RetryPolicy,
    activity,
    workflow,
)

# Worker processes of the drift test carry different code, chosen by this variable.
VARIANT = os.environ.get("TESTAPP_VARIANT", "1")


@activity
def add_one(x: int) -> int:
    return x + 1


@activity
def double(x: int) -> int:
    return x * 2


@activity
def describe(x: int) -> dict[str, Any]:
    return {"value": x, "text": f"value is {x}"}


@workflow(name="tests.three_steps")
def three_steps(ctx: Any, x: int) -> dict[str, Any]:
    a = ctx.activity(add_one, x)
    b = ctx.activity(double, a)
    return ctx.activity(describe, b)


@activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.05, jitter=0))
def fails_twice(activity_context: ActivityContext) -> int:
    if activity_context.attempt < 3:
        raise RuntimeError(f"attempt {activity_context.attempt} fails")
    return activity_context.attempt


@activity(retry=RetryPolicy(max_attempts=2, initial_interval=0.05, jitter=0))
def always_fails() -> None:
    raise RuntimeError("this never works")


@activity(retry=RetryPolicy(max_attempts=5, initial_interval=0.05))
def refuses() -> None:
    raise NonRetryableError("card declined")


@workflow(name="tests.retrying")
def retrying(ctx: Any) -> dict[str, Any]:
    attempts = ctx.activity(fails_twice)
    try:
        ctx.activity(always_fails)
    except ActivityFailed as failure:
        handled = {"activity": failure.activity, "attempts": failure.attempts}
    return {"attempts": attempts, "handled": handled}


@workflow(name="tests.non_retryable")
def non_retryable(ctx: Any) -> str:
    try:
        ctx.activity(refuses)
    except ActivityFailed as failure:
        return f"{failure.error_type}:{failure.attempts}"
    return "unreachable"


@workflow(name="tests.sleeper")
def sleeper(ctx: Any, seconds: float) -> str:
    ctx.sleep(seconds)
    return "woke"


@workflow(name="tests.waiter")
def waiter(ctx: Any, timeout: float | None = None) -> Any:
    return ctx.wait_signal("go", timeout=timeout, default="timed-out")


@workflow(name="tests.collector")
def collector(ctx: Any, count: int) -> list[Any]:
    return [ctx.wait_signal("item") for _ in range(count)]


@activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.05, jitter=0))
def blocking_step(marker_dir: str, activity_context: ActivityContext) -> int:
    """Leaves a marker per attempt; the first attempt blocks until its worker is killed."""
    Path(marker_dir, f"attempt-{activity_context.attempt}").write_text(str(os.getpid()))
    if activity_context.attempt == 1:
        time.sleep(300)
    return activity_context.attempt


@workflow(name="tests.blocking_activity")
def blocking_activity(ctx: Any, marker_dir: str) -> dict[str, Any]:
    before = ctx.activity(add_one, 1)
    attempt = ctx.activity(blocking_step, marker_dir)
    after = ctx.activity(add_one, before)
    return {"attempt": attempt, "after": after}


def _stall_once(marker_dir: str) -> str:
    """Blocks the advance the first time (until the worker is killed)."""
    marker = Path(marker_dir, "advance-started")
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(300)
    return "passed"


@workflow(name="tests.stalling_advance")
def stalling_advance(ctx: Any, marker_dir: str) -> dict[str, Any]:
    first = ctx.activity(add_one, 1)
    passed = ctx.side_effect(lambda: _stall_once(marker_dir))
    second = ctx.activity(add_one, first)
    return {"first": first, "passed": passed, "second": second}


@workflow(name="tests.stalling_after_timer")
def stalling_after_timer(ctx: Any, marker_dir: str) -> dict[str, Any]:
    """Its advance after the timer runs under a lease (a due timer is fired by a claim)."""
    ctx.sleep(0.05)
    passed = ctx.side_effect(lambda: _stall_once(marker_dir))
    return {"passed": passed, "then": ctx.activity(add_one, 1)}


@activity
def step_a() -> str:
    return "a"


@activity
def step_b() -> str:
    return "b"


@activity
def step_c() -> str:
    return "c"


if VARIANT == "1":

    @workflow(name="tests.drifting")
    def drifting(ctx: Any) -> list[str]:
        first = ctx.activity(step_a)
        ctx.wait_signal("go")
        return [first, ctx.activity(step_b)]

else:

    @workflow(name="tests.drifting")
    def drifting(ctx: Any) -> list[str]:
        first = ctx.activity(step_c)  # incompatible: the recorded first command was step_a
        ctx.wait_signal("go")
        return [first, ctx.activity(step_b)]


@workflow(name="tests.direct_call")
def direct_call_workflow(ctx: Any) -> int:
    return add_one(1)  # the mistake: an activity called directly inside workflow code


@workflow(name="tests.fan_out")
def fan_out(ctx: Any, count: int) -> list[int]:
    handles = [ctx.start_activity(add_one, n) for n in range(count)]
    return sorted(ctx.wait_all(*handles))


@activity(
    timeout=60,
    heartbeat_timeout=10,
    retry=RetryPolicy(max_attempts=2, initial_interval=0.05, jitter=0),
)
def watched_step(x: int) -> int:
    return x


@workflow(name="tests.watched")
def watched(ctx: Any, schedule_to_close: float | None = None) -> Any:
    step = watched_step.with_options(schedule_to_close_timeout=schedule_to_close)
    try:
        return ctx.activity(step, 7)
    except ActivityFailed as failure:
        return {"failed": failure.error_message, "attempts": failure.attempts}


@activity
def pausing_step(marker_dir: str, seconds: float) -> str:
    Path(marker_dir, "pausing-started").write_text(str(os.getpid()))
    time.sleep(seconds)
    return "finished"


@workflow(name="tests.pausing")
def pausing(ctx: Any, marker_dir: str, seconds: float) -> list[str]:
    return [ctx.activity(pausing_step, marker_dir, seconds), ctx.activity(step_a)]


# -- composition ---------------------------------------------------------------


@activity
def book(step: str) -> str:
    return f"booked {step}"


@activity(retry=RetryPolicy(max_attempts=2, initial_interval=0.05, jitter=0))
def undo(step: str) -> str:
    if step == "broken":
        raise RuntimeError(f"cannot undo {step}")
    return f"undid {step}"


@activity
def payment_declined() -> None:
    raise NonRetryableError("card declined")


@workflow(name="tests.saga")
def saga(ctx: Any, steps: list[str], parallel: bool = False) -> dict[str, Any]:
    for step in steps:
        ctx.activity(book, step)
        ctx.on_rollback(undo, step)
    try:
        ctx.activity(payment_declined)
    except ActivityFailed:
        failures = ctx.compensate(parallel=parallel)
        return {"status": "rolled back", "failed": [f.error_message for f in failures]}
    return {"status": "done"}


@workflow(name="tests.child_double")
def child_double(ctx: Any, n: int) -> int:
    return ctx.activity(double, n)


@workflow(name="tests.child_fails")
def child_fails(ctx: Any) -> None:
    raise ValueError("the child gives up")


@workflow(name="tests.fan_out_children")
def fan_out_children(ctx: Any, count: int) -> list[int]:
    handles = [ctx.start_child(child_double, n) for n in range(count)]
    return ctx.wait_all(*handles)


@workflow(name="tests.parent_of_failure")
def parent_of_failure(ctx: Any) -> str:
    try:
        ctx.child(child_fails)
    except ChildFailed as failure:
        return f"handled: {failure.error['message']}"
    return "unreachable"


@workflow(name="tests.tree_leaf")
def tree_leaf(ctx: Any) -> str:
    ctx.sleep(3600)
    return "leaf slept"


@workflow(name="tests.tree_mid")
def tree_mid(ctx: Any, block: bool) -> str:
    """Waits for its child while an activity runs (blocking until cancelled, with ``block``)."""
    ctx.start_activity(blocking_forever if block else book, "mid")
    return ctx.child(tree_leaf)


@activity
def blocking_forever(step: str, activity_context: ActivityContext) -> str:
    """Runs until the run is cancelled (cooperatively), then returns."""
    deadline = time.monotonic() + 120
    while not activity_context.is_cancelled() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "stopped"


@workflow(name="tests.tree_root")
def tree_root(ctx: Any, block: bool = False) -> str:
    ctx.activity(book, "root")
    ctx.on_rollback(undo, "root")
    try:
        return ctx.child(tree_mid, block)
    except CancellationRequested:
        ctx.compensate()
        raise


@workflow(name="tests.cycles")
def cycles(ctx: Any, cycle: int, seen: list[Any]) -> dict[str, Any]:
    ctx.activity(add_one, cycle)
    if cycle == 3:
        seen = [*seen, ctx.wait_signal("poke")]
    if cycle < 5:
        ctx.continue_as_new(cycle + 1, seen)
    return {"cycle": cycle, "seen": seen}


@workflow(name="tests.declared_signals", signals={"approve": dict, "note": str, "any": None})
def declared_signals(ctx: Any) -> Any:
    return ctx.wait_signal("approve")


@workflow(name="tests.saga_blocking_undo")
def saga_blocking_undo(ctx: Any, marker_dir: str) -> dict[str, Any]:
    for step in ("a", "b"):
        ctx.activity(book, step)
        ctx.on_rollback(undo, step)
    ctx.activity(book, "c")
    ctx.on_rollback(blocking_step, marker_dir)  # the first to run; its first attempt hangs
    try:
        ctx.activity(payment_declined)
    except ActivityFailed:
        return {"failed": [f.error_message for f in ctx.compensate()]}
    return {"failed": None}


if VARIANT == "1":

    @workflow(name="tests.patchable")
    def patchable(ctx: Any) -> str:
        greeting = ctx.activity(step_a)
        ctx.wait_signal("go")
        return greeting

else:

    @workflow(name="tests.patchable")
    def patchable(ctx: Any) -> str:
        greeting = ctx.activity(step_c) if ctx.patched("use-step-c") else ctx.activity(step_a)
        ctx.wait_signal("go")
        return greeting


# The versioning tests' workflows live in their own module; registering them here lets
# every worker process carry them.
from . import versioned  # noqa: E402, F401


@workflow(name="tests.reviewed", signals={"approve": dict, "reject": str})
def reviewed(ctx: Any) -> Any:
    return ctx.wait_signal("approve")


# Version 2 exists only in processes started with TESTAPP_VARIANT=3 (the release test).
@workflow(name="tests.admin_versioned", version=1)
def admin_versioned_v1(ctx: Any) -> str:
    return "v1"


if VARIANT == "3":

    @workflow(name="tests.admin_versioned", version=2)
    def admin_versioned_v2(ctx: Any) -> str:
        return "v2"


from . import (  # noqa: E402
    deadlines,  # noqa: F401
    interaction,  # noqa: F401
    reliability,  # noqa: F401
    scheduled,  # noqa: F401
    txn,  # noqa: F401
    updates,  # noqa: F401
)
from .flow import charge_customer  # noqa: E402, F401  (flow control's workflows)
from .startflow import per_customer  # noqa: E402, F401  (start limits' workflows)
