"""`@activity(transactional=True)`: what is refused at definition, and what the engine records."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_django import ActivityContext, activity, workflow
from continuum_django.engine.exceptions import RegistrationError
from continuum_django.engine.local import LocalRunner


@activity(name="tests.engine.txn.write", transactional=True)
def write(value: int, activity_context: ActivityContext) -> int:
    activity_context.heartbeat({"ignored": True})  # does nothing inside the transaction
    return value + 1


@activity(name="tests.engine.txn.plain")
def plain(value: int) -> int:
    return value


@workflow(name="tests.engine.txn.both")
def both(ctx: Any) -> list[int]:
    return [ctx.activity(write, 1), ctx.activity(plain, 2)]


def test_the_scheduled_event_records_a_transactional_activity_and_only_that() -> None:
    runner = LocalRunner()
    run_id = runner.start(both)
    runner.run_until_idle()
    assert runner.journal.runs[run_id].result == [2, 2]
    scheduled = [e.payload for e in runner.journal.history(run_id) if e.type.endswith("scheduled")]
    assert scheduled[0]["transactional"] is True
    assert "transactional" not in scheduled[1]  # histories of ordinary activities unchanged
    assert runner.journal.tasks[1].heartbeat_details is None


def test_an_async_transactional_activity_is_refused() -> None:
    with pytest.raises(RegistrationError, match="transactional and `async def`"):

        @activity(name="tests.engine.txn.async", transactional=True)
        async def fetch() -> None: ...


def test_a_heartbeat_timeout_is_refused() -> None:
    with pytest.raises(RegistrationError, match="transactional and has a heartbeat_timeout"):

        @activity(name="tests.engine.txn.hb", transactional=True, heartbeat_timeout=5)
        def slow() -> None: ...

    with pytest.raises(RegistrationError, match="heartbeat_timeout"):
        write.with_options(heartbeat_timeout=5)


def test_using_is_only_for_transactional_activities() -> None:
    with pytest.raises(RegistrationError, match="add transactional=True"):
        activity(name="tests.engine.txn.using", using="ledger")
    with pytest.raises(RegistrationError, match="must be a database alias"):
        activity(name="tests.engine.txn.using", transactional=True, using="")


def test_limits_on_a_transactional_activity_are_refused() -> None:
    def body(customer: str) -> None:
        return None

    with pytest.raises(RegistrationError, match="cannot take concurrency or rate_limit"):
        activity(name="tests.engine.txn.limited", transactional=True, concurrency=1)(body)
    with pytest.raises(RegistrationError, match="cannot take concurrency or rate_limit"):
        write.with_options(rate_limit="5/s")
    assert write.with_options(priority=3).flow.priority == 3  # priority alone is no limit
