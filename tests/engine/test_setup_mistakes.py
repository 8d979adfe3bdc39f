"""Mistakes caught when they are made: arguments that do not fit a workflow, signal names
its code never waits for (the engine's part; the Django side is tests/django/test_setup_checks)."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_django import WorkflowFailed, workflow
from continuum_django.engine.definitions import bind_arguments, unexpected_signal
from continuum_django.engine.lint import signal_names_waited
from continuum_django.testing import WorkflowEnvironment


@workflow(name="setup.greet")
def greet(ctx: Any, name: str, *, polite: bool = True) -> str:
    return f"{'Dear' if polite else 'Hi'} {name}"


@workflow(name="setup.approval")
def approval(ctx: Any, order_id: str) -> Any:
    first = ctx.wait_signal("approve", timeout=60, default=None)
    return first, ctx.wait_signal(name="ship")


@workflow(name="setup.dynamic")
def dynamic(ctx: Any, which: str) -> Any:
    return ctx.wait_signal(which)


@workflow(name="setup.declared", signals={"go": None})
def declared(ctx: Any) -> Any:
    return ctx.wait_signal("go")


@workflow(name="setup.parent")
def parent(ctx: Any) -> str:
    return ctx.child(greet, "Ada", "extra", "arguments")


def test_arguments_that_fit_the_signature_bind() -> None:
    bind_arguments(greet, ["Ada"], {"polite": False})
    bind_arguments(greet, [], {"name": "Ada"})


@pytest.mark.parametrize(
    ("args", "kwargs", "why"),
    [
        ([], {}, "missing a required argument: 'name'"),
        (["Ada", True], {}, "too many positional arguments"),
        (["Ada"], {"rude": True}, "got an unexpected keyword argument 'rude'"),
    ],
)
def test_arguments_that_do_not_fit_raise_type_error_naming_the_workflow(
    args: list[Any], kwargs: dict[str, Any], why: str
) -> None:
    with pytest.raises(TypeError) as caught:
        bind_arguments(greet, args, kwargs)
    message = str(caught.value)
    assert message.startswith("workflow 'setup.greet' cannot take these arguments: ")
    assert why in message
    assert "greet(ctx: 'Any', name: 'str', *, polite: 'bool' = True)" in message


def test_a_child_started_with_arguments_that_do_not_fit_fails_the_parent_clearly() -> None:
    env = WorkflowEnvironment()
    run = env.start(parent)
    with pytest.raises(WorkflowFailed) as caught:
        run.result()
    assert caught.value.error["type"].endswith("WorkflowUsageError")
    assert "child workflow 'setup.greet' cannot take these arguments" in str(caught.value)
    assert [e.type for e in run.history()][:1] == ["run_started"]
    assert "child_started" not in [e.type for e in run.history()]


def test_the_signal_names_a_workflow_waits_for_are_read_from_its_source() -> None:
    assert approval.waited_signals == frozenset({"approve", "ship"})
    assert greet.waited_signals == frozenset()
    assert dynamic.waited_signals is None  # a name computed at run time: unknown
    assert signal_names_waited(len) is None  # no source


def test_a_signal_its_code_never_waits_for_is_reported() -> None:
    assert unexpected_signal(approval, "approve") is None
    why = unexpected_signal(approval, "aprove")
    assert why is not None
    assert "workflow 'setup.approval' never waits for a signal 'aprove'" in why
    assert "waits for 'approve', 'ship'" in why
    assert "@workflow(signals=" in why
    assert "waits for no signal" in (unexpected_signal(greet, "go") or "")
    assert unexpected_signal(dynamic, "anything") is None  # names may be dynamic
    assert unexpected_signal(declared, "other") is None  # its contract refuses it instead
