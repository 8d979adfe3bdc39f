"""The determinism lint: each non-deterministic call is flagged with its ctx hint; waivers work."""

from __future__ import annotations

import datetime
import datetime as dt
import os
import random
import socket
import threading
import time
import urllib.request
import uuid
from datetime import date
from time import sleep as nap
from typing import Any

import pytest

from continuum_django import workflow
from continuum_django.engine.definitions import WorkflowDefinition, source_hash
from continuum_django.engine.exceptions import RegistrationError
from continuum_django.engine.lint import RULE_IDS, lint_workflow


class Order:
    """Looks like a Django model to the lint: a class with ``_meta`` and ``objects``."""

    _meta = object()
    objects: Any = None


def rules_and_calls(definition: WorkflowDefinition[..., Any]) -> list[tuple[str, str]]:
    return [(f.rule, f.call) for f in definition.lint_findings]


# Each case: a body using one forbidden call, the rule it breaks, the dotted call and the
# ctx replacement its hint must name.
CASES: dict[str, tuple[str, str, str]] = {
    "time_time": ("time.time", "time.time", "ctx.now()"),
    "datetime_now": ("datetime.now", "datetime.datetime.now", "ctx.now()"),
    "datetime_utcnow_aliased": ("datetime.now", "datetime.datetime.utcnow", "ctx.now()"),
    "date_today": ("datetime.now", "datetime.date.today", "ctx.now()"),
    "random_choice": ("random", "random.choice", "ctx.random()"),
    "uuid1": ("uuid", "uuid.uuid1", "ctx.uuid4()"),
    "uuid4": ("uuid", "uuid.uuid4", "ctx.uuid4()"),
    "time_sleep_imported_as": ("time.sleep", "time.sleep", "ctx.sleep("),
    "environ_read": ("os.environ", "os.environ.get", "ctx.side_effect("),
    "getenv_local_import": ("os.environ", "os.getenv", "ctx.side_effect("),
    "orm_query": ("orm", "django.db.models.objects.filter", "ctx.activity("),
    "urlopen": ("network", "urllib.request.urlopen", "ctx.activity("),
    "socket_use": ("network", "socket.create_connection", "ctx.activity("),
    "thread": ("threading", "threading.Thread", "ctx.start_activity("),
}


def time_time(ctx: Any) -> Any:
    return time.time()


def datetime_now(ctx: Any) -> Any:
    return datetime.datetime.now()


def datetime_utcnow_aliased(ctx: Any) -> Any:
    return dt.datetime.utcnow()


def date_today(ctx: Any) -> Any:
    return date.today()


def random_choice(ctx: Any) -> Any:
    return random.choice([1, 2])


def uuid1(ctx: Any) -> Any:
    return uuid.uuid1()


def uuid4(ctx: Any) -> Any:
    return uuid.uuid4()


def time_sleep_imported_as(ctx: Any) -> Any:
    nap(1)


def environ_read(ctx: Any) -> Any:
    return os.environ.get("HOME")


def getenv_local_import(ctx: Any) -> Any:
    import os as operating_system

    return operating_system.getenv("HOME")


def orm_query(ctx: Any) -> Any:
    return Order.objects.filter(paid=True)


def urlopen(ctx: Any) -> Any:
    return urllib.request.urlopen("https://example.com")


def socket_use(ctx: Any) -> Any:
    return socket.create_connection(("example.com", 80))


def thread(ctx: Any) -> Any:
    threading.Thread(target=print).start()


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_listed_call_is_flagged_with_its_hint(case: str) -> None:
    rule, call, replacement = CASES[case]
    fn = globals()[case]
    definition = workflow(name=f"lint.{case}")(fn)
    (finding,) = definition.lint_findings
    assert (finding.rule, finding.call) == (rule, call)
    assert replacement in finding.hint
    assert finding.line == fn.__code__.co_firstlineno + (3 if case == "getenv_local_import" else 1)
    assert call in str(finding) and replacement in str(finding)


def test_every_rule_has_a_case() -> None:
    assert {rule for rule, _, _ in CASES.values()} == RULE_IDS


@workflow(name="lint.clean")
def clean(ctx: Any, when: dt.datetime, rng: random.Random | None = None) -> Any:
    started = ctx.now()
    token = ctx.uuid4()
    env = ctx.side_effect(lambda: os.environ.get("FEATURE"))

    def read_clock() -> float:
        return time.time()

    clock = ctx.side_effect(read_clock)
    time_ = 3  # a local name that shadows nothing
    return [started, token, env, clock, time_, when.isoformat()]


def test_deterministic_code_and_side_effects_are_not_flagged() -> None:
    assert clean.lint_findings == ()


def test_a_local_variable_named_like_a_module_is_not_flagged() -> None:
    def shadowing(ctx: Any, time: Any) -> Any:
        return time.time()

    assert lint_workflow(shadowing) == ()


@workflow(name="lint.mixed")
def mixed(ctx: Any) -> Any:
    first = time.time()
    second = random.random()
    return first, second, uuid.uuid4()


@workflow(name="lint.mixed_waived_some", waive=("time.time", "random"))
def mixed_waived_some(ctx: Any) -> Any:
    first = time.time()
    second = random.random()
    return first, second, uuid.uuid4()


@workflow(name="lint.mixed_waived_all", waive=True)
def mixed_waived_all(ctx: Any) -> Any:
    first = time.time()
    second = random.random()
    return first, second, uuid.uuid4()


def test_findings_are_in_source_order() -> None:
    assert rules_and_calls(mixed) == [
        ("time.time", "time.time"),
        ("random", "random.random"),
        ("uuid", "uuid.uuid4"),
    ]


def test_a_waiver_silences_the_rules_it_names() -> None:
    assert rules_and_calls(mixed_waived_some) == [("uuid", "uuid.uuid4")]
    assert mixed_waived_all.lint_findings == ()


def test_a_waiver_naming_an_unknown_rule_is_refused() -> None:
    with pytest.raises(RegistrationError, match=r"unknown lint rules \['time'\]"):
        workflow(name="lint.typo", waive=("time",))


def test_source_hash_ignores_formatting_comments_and_the_function_name() -> None:
    def original(ctx: Any, x: int) -> Any:
        return ctx.activity("a", x)

    def reformatted(ctx: Any, x: int) -> Any:  # a comment
        """A docstring."""
        return ctx.activity(
            "a",  # another comment
            x,
        )

    def changed(ctx: Any, x: int) -> Any:
        return ctx.activity("b", x)

    assert len(source_hash(original)) == 16
    assert source_hash(reformatted) == source_hash(original)
    assert source_hash(changed) != source_hash(original)
