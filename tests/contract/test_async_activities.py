"""`async def` activities run to their end in the worker; `async def` workflows are refused."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_django import workflow
from continuum_django.engine.exceptions import RegistrationError
from tests.testapp import reliability as rl

from .conftest import Harness


def test_an_async_activity_returns_its_awaited_value(harness: Harness) -> None:
    run = harness.start(rl.async_activity, "EUR")
    harness.drain()
    assert harness.run(run)["status"] == "completed"
    assert harness.run(run)["result"] == {"currency": "EUR", "rate": 2}


def test_an_async_activity_that_raises_fails_like_any_other(harness: Harness) -> None:
    run = harness.start(rl.async_activity, "XXX")
    harness.drain()
    assert harness.run(run)["result"] == {"failed": "no rate for XXX"}


def test_an_async_workflow_is_refused_where_it_is_defined() -> None:
    with pytest.raises(RegistrationError, match="async def"):

        @workflow(name="tests.async_workflow")
        async def async_workflow(ctx: Any) -> None: ...
