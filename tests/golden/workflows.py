"""Workflows whose recorded histories are golden: change them only in replay-compatible ways."""

from __future__ import annotations

from typing import Any

from continuum_django import (
    ActivityContext,
    ActivityFailed,
    CancellationRequested,
    RetryPolicy,
    activity,
    workflow,
)


@activity(name="golden.echo")
def echo(value: Any) -> Any:
    return value


@activity(name="golden.flaky", retry=RetryPolicy(max_attempts=3, initial_interval=1, jitter=0))
def flaky(activity_context: ActivityContext) -> int:
    if activity_context.attempt < 3:
        raise RuntimeError("not yet")
    return activity_context.attempt


@activity(name="golden.broken", retry=RetryPolicy(max_attempts=2, initial_interval=1, jitter=0))
def broken(what: str) -> None:
    raise RuntimeError(f"{what} is broken")


@workflow(name="golden.activity_signal_activity")
def activity_signal_activity(ctx: Any, order: str) -> dict[str, Any]:
    first = ctx.activity(echo, order)
    decision = ctx.wait_signal("decision")
    return {"first": first, "decision": decision, "second": ctx.activity(echo, decision)}


@workflow(name="golden.signal_timeout")
def signal_timeout(ctx: Any) -> Any:
    return ctx.wait_signal("never", timeout=60, default="timed out")


@workflow(name="golden.timer")
def timer(ctx: Any) -> str:
    ctx.sleep(3600)
    return "an hour later"


@workflow(name="golden.retry_then_success")
def retry_then_success(ctx: Any) -> int:
    return ctx.activity(flaky)


@workflow(name="golden.failure_handled")
def failure_handled(ctx: Any) -> str:
    try:
        ctx.activity(broken, "printer")
    except ActivityFailed as failure:
        return f"handled after {failure.attempts}: {failure.error_message}"
    return "unreachable"


@workflow(name="golden.side_effects")
def side_effects(ctx: Any) -> dict[str, Any]:
    return {
        "now": ctx.now().isoformat(),
        "uuid": str(ctx.uuid4()),
        "random": ctx.random(),
        "effect": ctx.side_effect(lambda: "journaled once"),
    }


@workflow(name="golden.saga")
def saga(ctx: Any, steps: list[str], fail: bool, parallel: bool = False) -> dict[str, Any]:
    for step in steps:
        ctx.activity(echo, step)
        ctx.on_rollback(broken if step == "broken" else echo, f"undo {step}")
    if not fail:
        return {"status": "done"}
    failures = ctx.compensate(parallel=parallel)
    return {"status": "compensated", "failures": [f.error_message for f in failures]}


@workflow(name="golden.child")
def child(ctx: Any, n: int) -> int:
    return ctx.activity(echo, n * 10)


@workflow(name="golden.fan_out")
def fan_out(ctx: Any, count: int) -> list[int]:
    return ctx.wait_all(*[ctx.start_child(child, n) for n in range(count)])


@workflow(name="golden.sleepy_child")
def sleepy_child(ctx: Any) -> str:
    ctx.sleep(3600)
    return "slept"


@workflow(name="golden.cancelled_parent")
def cancelled_parent(ctx: Any) -> str:
    ctx.activity(echo, "reserve")
    ctx.on_rollback(echo, "release")
    try:
        return ctx.child(sleepy_child)
    except CancellationRequested:
        ctx.compensate()
        raise


@workflow(name="golden.chain")
def chain(ctx: Any, cycle: int) -> int:
    ctx.activity(echo, cycle)
    if cycle < 3:
        ctx.continue_as_new(cycle + 1)
    return cycle


@workflow(name="golden.patched")
def patched(ctx: Any) -> str:
    if ctx.patched("new-greeting"):
        greeting = ctx.activity(echo, "hello, new")
    else:
        greeting = ctx.activity(echo, "hello")
    ctx.wait_signal("go")
    return greeting


def patched_before_the_patch(ctx: Any) -> str:
    """The code of golden.patched before it gained ``ctx.patched`` (records the old history)."""
    greeting = ctx.activity(echo, "hello")
    ctx.wait_signal("go")
    return greeting


@workflow(name="golden.cancel_while_waiting")
def cancel_while_waiting(ctx: Any) -> str:
    ctx.on_rollback(echo, "undo")
    try:
        ctx.wait_signal("never")
    except CancellationRequested:
        ctx.compensate()
        raise
    return "signalled"


@workflow(name="golden.signal_with_start")
def signal_with_start(ctx: Any, order: str) -> dict[str, Any]:
    first = ctx.wait_signal("add")
    return {"order": order, "first": ctx.activity(echo, first)}


@workflow(name="golden.publish")
def publish(ctx: Any) -> int:
    ctx.publish("stage", "charging")
    total = ctx.activity(echo, 42)
    ctx.publish("stage", "shipped")
    ctx.publish("total", total)
    return total  # type: ignore[no-any-return]


@workflow(name="golden.publish_chain")
def publish_chain(ctx: Any, cycle: int) -> int:
    if cycle == 1:
        ctx.publish("first", ctx.activity(echo, "one"))
    ctx.publish("cycle", cycle)
    if cycle < 2:
        ctx.continue_as_new(cycle + 1)
    return cycle


@workflow(name="golden.updates")
def updates(ctx: Any) -> dict[str, Any]:
    """Replies to one update, rejects the next, then waits for a third until its timeout."""
    first = ctx.wait_update("set")
    first.reply({"was": None, "now": first.payload})
    second = ctx.wait_update("set")
    second.reject(f"already set to {first.payload}")
    third = ctx.wait_update("set", timeout=60)
    return {"value": first.payload, "third": None if third is None else third.payload}


@workflow(name="golden.late")
def late(ctx: Any) -> str:
    """Started with a timeout it cannot meet: the journal ends it at its deadline."""
    ctx.activity(echo, "begin")
    ctx.sleep(3600)
    return "too late"


@activity(
    name="golden.ledger_write",
    transactional=True,
    retry=RetryPolicy(max_attempts=2, initial_interval=1, jitter=0),
)
def ledger_write(amount: int) -> int:
    if amount < 0:
        raise ValueError(f"cannot book {amount}")
    return amount * 2


@workflow(name="golden.transactional")
def transactional(ctx: Any) -> dict[str, Any]:
    """A transactional activity that completes, then one that fails after its retry."""
    booked = ctx.activity(ledger_write, 21)
    try:
        ctx.activity(ledger_write, -1)
    except ActivityFailed as exc:
        return {"booked": booked, "refused": str(exc)}
    return {"booked": booked}
