"""Workflows of the reliability regressions: cancels meeting continue_as_new, late cancels,
cleanups that raise, children left by an earlier incarnation, patches in loops, poison values."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from continuum_django import (
    ActivityContext,
    ActivityFailed,
    CancellationRequested,
    RetryPolicy,
    activity,
    workflow,
)


@activity
def record(step: str) -> str:
    return step


@activity
def unjournalable() -> Any:
    return {"bytes": object()}  # cannot be journaled: a poison result


@workflow(name="tests.ticker")
def ticker(ctx: Any, tick: int) -> int:
    """A sleep -> continue_as_new loop."""
    ctx.sleep(60)
    if tick >= 100:
        return tick
    ctx.continue_as_new(tick + 1)


@workflow(name="tests.two_steps")
def two_steps(ctx: Any) -> list[str]:
    """Schedules an activity in each of two activations."""
    first = ctx.activity(record, "first")
    return [first, ctx.activity(record, "second")]


@workflow(name="tests.sleep_then_timer")
def sleep_then_timer(ctx: Any) -> str:
    ctx.activity(record, "before")
    ctx.sleep(3600)
    return "slept"


@workflow(name="tests.never_waits_again")
def never_waits_again(ctx: Any) -> str:
    """After its one activity, computes and returns: no further wait or command."""
    value = ctx.activity(record, "only")
    return f"done {value}"


@workflow(name="tests.cleanup_raises")
def cleanup_raises(ctx: Any) -> str:
    try:
        ctx.sleep(3600)
    except CancellationRequested:
        raise RuntimeError("cleanup went wrong") from None
    return "slept"


@workflow(name="tests.cleanup_runs")
def cleanup_runs(ctx: Any) -> str:
    try:
        ctx.sleep(3600)
    except CancellationRequested:
        ctx.activity(record, "cleanup")
        return "cleaned"
    return "slept"


@workflow(name="tests.sleepy_child")
def sleepy_child(ctx: Any) -> str:
    ctx.sleep(3600)
    return "child done"


@workflow(name="tests.parent_continues")
def parent_continues(ctx: Any, round: int) -> str:
    """Starts a child in round 1 and continues as new without waiting for it."""
    if round == 1:
        ctx.start_child(sleepy_child)
        ctx.continue_as_new(2)
    return ctx.wait_signal("finish")


@workflow(name="tests.patched_loop")
def patched_loop(ctx: Any, rounds: int) -> list[str]:
    """Asks the same patch once per round; a run must keep its first answer."""
    taken = []
    for _ in range(rounds):
        if ctx.patched("new-step"):
            taken.append(ctx.activity(record, "new"))
        else:
            taken.append(ctx.activity(record, "old"))
        ctx.wait_signal("next")
    return taken


@workflow(name="tests.poison_activity")
def poison_activity(ctx: Any) -> Any:
    return ctx.activity(unjournalable)


@workflow(name="tests.poison_result")
def poison_result(ctx: Any) -> Any:
    ctx.activity(record, "x")
    return {"value": "bad\x00byte"}


DRAWS: list[int] = []


def _draw() -> int:
    DRAWS.append(len(DRAWS) + 1)
    return DRAWS[-1]


@workflow(name="tests.side_effect_once")
def side_effect_once(ctx: Any) -> str:
    value = ctx.side_effect(_draw)
    return ctx.activity(record, f"drew {value}")


FIXED: list[bool] = []  # a test appends True once the "bug" behind flaky_until_fixed is fixed


@activity(retry=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=0))
def flaky_until_fixed() -> str:
    if not FIXED:
        raise ValueError("the payment provider is down")
    return "fixed"


@workflow(name="tests.retry_me")
def retry_me(ctx: Any) -> list[str]:
    first = ctx.activity(record, "a")
    return [first, ctx.activity(flaky_until_fixed)]


@workflow(name="tests.handles_then_fails")
def handles_then_fails(ctx: Any) -> None:
    try:
        ctx.activity(flaky_until_fixed)
    except ActivityFailed:
        ctx.activity(record, "handled")
    raise RuntimeError("gave up")


@activity(retry=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=0))
def needs_file(path: str) -> str:
    """Fails until the file at ``path`` exists: an outage an operator fixes by hand."""
    if not Path(path).exists():
        raise ValueError(f"{path} is missing")
    return Path(path).read_text()


@workflow(name="tests.needs_file")
def needs_file_workflow(ctx: Any, path: str) -> str:
    return ctx.activity(needs_file, path)


@workflow(name="tests.fast_ticker")
def fast_ticker(ctx: Any, tick: int) -> int:
    """A short sleep -> continue_as_new loop that never ends by itself."""
    ctx.sleep(0.05)
    ctx.continue_as_new(tick + 1)


@activity(heartbeat_timeout=30)
async def fetch_rate(currency: str, activity_context: ActivityContext) -> dict[str, Any]:
    """An `async def` activity that awaits and heartbeats."""
    await asyncio.sleep(0.01)
    await activity_context.aheartbeat({"currency": currency})
    if currency == "XXX":
        raise ValueError("no rate for XXX")
    return {"currency": currency, "rate": 2}


@workflow(name="tests.async_activity")
def async_activity(ctx: Any, currency: str) -> Any:
    try:
        return ctx.activity(fetch_rate, currency)
    except ActivityFailed as failure:
        return {"failed": failure.error_message}


@workflow(name="tests.approval_or_reminder")
def approval_or_reminder(ctx: Any) -> Any:
    """An approval, or a reminder after an hour, whichever first; then the approval anyway."""
    approval = ctx.signal_waiter("approval")
    first = ctx.wait_any(approval, ctx.timer(3600))
    if first is approval:
        return {"approved": approval.result()}
    ctx.activity(record, "reminder sent")
    return {"reminded": True, "then": ctx.wait_signal("approval")}


@workflow(name="tests.both_signals")
def both_signals(ctx: Any) -> Any:
    return ctx.wait_all(ctx.signal_waiter("a"), ctx.signal_waiter("b"), ctx.timer(1))


@workflow(name="tests.signal_or_activity")
def signal_or_activity(ctx: Any) -> Any:
    stop = ctx.signal_waiter("stop")
    work = ctx.start_activity(record, "work")
    first = ctx.wait_any(stop, work)
    return "stopped" if first is stop else first.result()


@workflow(name="tests.takes_anything")
def takes_anything(ctx: Any, *args: Any, **kwargs: Any) -> Any:
    return [list(args), kwargs]


@workflow(name="tests.poison_attribute")
def poison_attribute(ctx: Any) -> None:
    ctx.set_attributes(customer="c\x00-9")


@workflow(name="tests.poison_side_effect")
def poison_side_effect(ctx: Any) -> Any:
    return ctx.side_effect(lambda: {"big": 10**2000})


@workflow(name="tests.poison_error")
def poison_error(ctx: Any) -> None:
    ctx.activity(record, "x")
    raise RuntimeError("bad \x00 byte and a lone \ud800 surrogate")


@workflow(name="tests.sleeps_until")
def sleeps_until(ctx: Any, moment: Any) -> str:
    ctx.sleep_until(moment)
    return "woke"
