"""The benchmark's workflows: three trivial activities, and N sequential ones."""

from __future__ import annotations

from typing import Any

from continuum_django import activity, workflow


@activity(name="bench.first")
def first(x: int) -> dict[str, Any]:
    return {"step": 1, "value": x}


@activity(name="bench.second")
def second(previous: dict[str, Any]) -> dict[str, Any]:
    return {"step": 2, "value": previous["value"] + 1}


@activity(name="bench.third")
def third(previous: dict[str, Any]) -> dict[str, Any]:
    return {"step": 3, "value": previous["value"] * 2}


@workflow(name="bench.three_steps")
def three_steps(ctx: Any, x: int) -> dict[str, Any]:
    """The throughput, latency and database-cost workflow: 3 steps."""
    return ctx.activity(third, ctx.activity(second, ctx.activity(first, x)))


@activity(name="bench.increment")
def increment(value: int) -> int:
    return value + 1


@workflow(name="bench.sequence")
def sequence(ctx: Any, steps: int) -> int:
    """The history-growth workflow: ``steps`` activities one after another."""
    value = 0
    for _ in range(steps):
        value = ctx.activity(increment, value)
    return value


@activity(name="bench.limited", concurrency=1000, concurrency_key=lambda x: x % 10)
def limited(x: int) -> int:
    """A step under a concurrency limit per key that never binds: what admitting it costs."""
    return x + 1


@workflow(name="bench.limited_steps")
def limited_steps(ctx: Any, x: int) -> int:
    """The flow-control workflow: three steps like three_steps, each admitted by the claim."""
    return ctx.activity(limited, ctx.activity(limited, ctx.activity(limited, x) - 1) - 1)  # type: ignore[no-any-return]


@workflow(name="bench.sleeper")
def sleeper(ctx: Any, seconds: float) -> int:
    """The scale phase's sleeping runs: one durable timer, then done."""
    ctx.sleep(seconds)
    return 1


@workflow(name="bench.waiter")
def waiter(ctx: Any) -> Any:
    """The scale phase's runs waiting on a signal."""
    return ctx.wait_signal("go")
