"""Workflows of the signal-with-start and published-state tests."""

from __future__ import annotations

from typing import Any

from continuum_django import activity, workflow


@activity(name="tests.interaction.shout")
def shout(text: str) -> str:
    return text.upper()


@workflow(name="tests.interaction.collector")
def collector(ctx: Any, expected: int) -> list[Any]:
    """Takes ``expected`` ``add`` signals, publishing how many it has after each."""
    items: list[Any] = []
    while len(items) < expected:
        items.append(ctx.wait_signal("add"))
        ctx.publish("count", len(items))
    return items


@workflow(name="tests.interaction.greeter", signals={"name": str})
def greeter(ctx: Any, greeting: str) -> str:
    """Started by its first ``name`` signal (signal-with-start), which it shouts back."""
    name = ctx.wait_signal("name")
    return ctx.activity(shout, f"{greeting}, {name}")


@workflow(name="tests.interaction.progress")
def progress(ctx: Any, steps: int) -> int:
    """Publishes its stage and progress around activities, then waits for ``go``."""
    ctx.publish("stage", "working")
    for step in range(steps):
        ctx.activity(shout, f"step {step}")
        ctx.publish("done", step + 1)
    ctx.publish("card", {"card_number": "4111111111111111", "last4": "1111"})
    ctx.publish("stage", "waiting")
    ctx.wait_signal("go")
    ctx.publish("stage", "finished")
    return steps


@workflow(name="tests.interaction.relay")
def relay(ctx: Any, lap: int) -> int:
    """Continues as new until lap 3; the first lap's published key carries over."""
    if lap == 1:
        ctx.publish("first_lap", "seen")
    ctx.publish("lap", lap)
    if lap < 3:
        ctx.continue_as_new(lap + 1)
    return lap


BAD_KEYS: dict[str, Any] = {"int": 7, "empty": "", "long": "k" * 201, "nul": "a\x00b"}


@workflow(name="tests.interaction.bad_publisher")
def bad_publisher(ctx: Any, case: str) -> None:
    """Publishes under the bad key ``BAD_KEYS[case]``."""
    ctx.publish(BAD_KEYS[case], "value")


@workflow(name="tests.interaction.publish_around_a_crash")
def publish_around_a_crash(ctx: Any, marker_dir: str) -> int:
    """Publishes, then runs an activity whose first attempt blocks until its worker dies."""
    from .workflows import blocking_step

    ctx.publish("stage", "charging")
    attempt = ctx.activity(blocking_step, marker_dir)
    ctx.publish("stage", "charged")
    return attempt  # type: ignore[no-any-return]
