"""Determinism findings recorded at registration surface as system checks at the set level."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from continuum_django import workflow


@workflow(name="checks.clocked")
def clocked(ctx: Any) -> float:
    return time.time()


@workflow(name="checks.clocked_waived", waive=("time.time",))
def clocked_waived(ctx: Any) -> float:
    return time.time()


@workflow(name="checks.dice", waive=("time.time",))
def dice(ctx: Any) -> float:
    return time.time() + random.random()


def ours() -> list[checks.CheckMessage]:
    found = checks.run_checks(tags=["continuum"])
    return [m for m in found if "'checks." in m.msg and m.id and m.id.endswith("010")]


@pytest.mark.parametrize(
    ("level", "check_class", "check_id"),
    [("warn", checks.Warning, "continuum.W010"), ("error", checks.Error, "continuum.E010")],
)
def test_findings_are_reported_at_the_configured_level(
    level: str, check_class: type[checks.CheckMessage], check_id: str
) -> None:
    with override_settings(CONTINUUM={"DETERMINISM_LINT": level}):
        messages = ours()
    assert [(type(m), m.id, m.obj) for m in messages] == [
        (check_class, check_id, f"{__name__}.clocked"),
        (check_class, check_id, f"{__name__}.dice"),
    ]
    clock, die = messages
    line = clocked.fn.__code__.co_firstlineno + 2
    assert clock.msg == f"workflow 'checks.clocked' version 1, line {line}: time.time breaks replay"
    assert clock.hint.startswith("use ctx.now()")
    assert clock.hint.endswith("waive it with @workflow(..., waive=('time.time',))")
    assert die.msg.endswith("random.random breaks replay") and "ctx.random()" in die.hint


def test_checks_for_other_apps_leave_workflow_modules_of_this_one_out() -> None:
    from django.apps import apps

    only_admin = [apps.get_app_config("admin")]
    assert not [m for m in checks.run_checks(app_configs=only_admin) if "'checks." in m.msg]
