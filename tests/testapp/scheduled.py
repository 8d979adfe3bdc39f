"""Workflows of the schedule tests: one that ends at once, one that waits to be told."""

from __future__ import annotations

from typing import Any

from continuum_django import Cron, workflow


@workflow(name="tests.scheduled_echo")
def scheduled_echo(ctx: Any, label: str = "tick") -> str:
    return label


@workflow(name="tests.scheduled_wait")
def scheduled_wait(ctx: Any) -> str:
    return str(ctx.wait_signal("go"))


# Declared in code; a slot once a year, so it never fires during other tests' workers.
@workflow(
    name="tests.scheduled_yearly",
    schedule=Cron("0 3 1 1 *", tz="Europe/Paris", name="tests.yearly", kwargs={"label": "ny"}),
)
def scheduled_yearly(ctx: Any, label: str) -> str:
    return label
