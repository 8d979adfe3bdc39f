"""Workflows of the versioning tests; each process picks the code it carries from the environment.

``TESTAPP_VERSIONS`` lists the versions of ``tests.versioned`` this process registers
(default both); ``TESTAPP_CHANGE`` selects how ``tests.evolving`` was changed since its
runs started: unset (the original), ``compatible`` or ``incompatible``.
"""

from __future__ import annotations

import os
from typing import Any

from continuum_django import activity, workflow

VERSIONS = os.environ.get("TESTAPP_VERSIONS", "1,2").split(",")
CHANGE = os.environ.get("TESTAPP_CHANGE", "")


@activity
def stamp(label: str, x: int) -> str:
    return f"{label}:{x}"


if "1" in VERSIONS:

    @workflow(name="tests.versioned", version=1)
    def versioned_v1(ctx: Any, x: int) -> list[str]:
        first = ctx.activity(stamp, "v1-first", x)
        return [first, ctx.activity(stamp, "v1-second", x)]


if "2" in VERSIONS:

    @workflow(name="tests.versioned", version=2)
    def versioned_v2(ctx: Any, x: int) -> list[str]:
        return [ctx.activity(stamp, "v2", x)]


@activity
def reserve(qty: int) -> int:
    return qty


@activity
def reserve_all(qty: int) -> int:
    return qty


@activity
def backorder(qty: int) -> int:
    return -qty


@activity
def notify(qty: int) -> str:
    return f"notified {qty}"


if CHANGE == "incompatible":

    @workflow(name="tests.evolving")
    def evolving(ctx: Any, qty: int) -> Any:
        # Runs that already reserved (qty > 0) recorded `reserve`, not `reserve_all`.
        held = ctx.activity(reserve_all, qty) if qty > 0 else ctx.activity(backorder, qty)
        return [held, ctx.wait_signal("ship")]

elif CHANGE == "compatible":

    @workflow(name="tests.evolving")
    def evolving(ctx: Any, qty: int) -> Any:
        ctx.logger.info("evolving %s", qty)
        held = ctx.activity(reserve, qty) if qty > 0 else ctx.activity(backorder, qty)
        shipped = ctx.wait_signal("ship")
        # New commands after the point where every live run waits are safe to add.
        return [held, shipped, ctx.activity(notify, qty)]

else:

    @workflow(name="tests.evolving")
    def evolving(ctx: Any, qty: int) -> Any:
        held = ctx.activity(reserve, qty) if qty > 0 else ctx.activity(backorder, qty)
        return [held, ctx.wait_signal("ship")]
