"""Start limits in the engine: the key evaluated from a start's arguments (skipping ``ctx``),
recorded in ``run_started``; the in-memory journal records them and admits every start."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_django.engine.definitions import Registry, workflow
from continuum_django.engine.flow import FlowControlError
from continuum_django.engine.local import LocalRunner, new_run


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from continuum_django.engine import definitions

    monkeypatch.setattr(definitions, "registry", Registry())


def test_the_key_comes_from_the_start_arguments_not_ctx() -> None:
    @workflow(name="sf.onboard", concurrency=1, concurrency_key="customer")
    def onboard(ctx: Any, customer: str, plan: str = "free") -> str:
        return plan

    new = new_run(onboard, ["c-9"], {"plan": "pro"})
    assert new.flow == {"concurrency": 1, "key": "c-9", "priority": 0}
    assert new.started_payload()["flow"] == new.flow
    by_name = new_run(onboard, [], {"customer": "c-7"})
    assert by_name.flow is not None and by_name.flow["key"] == "c-7"


def test_a_key_function_takes_the_start_arguments() -> None:
    @workflow(name="sf.region", concurrency=2, concurrency_key=lambda order: order["region"])
    def region(ctx: Any, order: dict[str, Any]) -> None: ...

    assert new_run(region, [{"region": "eu"}]).flow == {
        "concurrency": 2, "key": "eu", "priority": 0
    }  # fmt: skip
    with pytest.raises(FlowControlError, match=r"workflow 'sf\.region' could not be evaluated"):
        new_run(region, [{"id": 1}])


def test_no_limit_records_nothing() -> None:
    @workflow(name="sf.plain")
    def plain(ctx: Any) -> None: ...

    new = new_run(plain)
    assert new.flow is None and "flow" not in new.started_payload()


def test_the_kit_records_one_start_s_options_and_admits_every_start() -> None:
    @workflow(name="sf.serial", concurrency=1)
    def serial(ctx: Any, n: int) -> int:
        return n

    from continuum_django.engine import definitions

    runner = LocalRunner(registry=definitions.registry)
    first = runner.start(serial.options(priority=4), 1)
    second = runner.start(serial, 2)
    runner.run_until_idle()
    assert runner.journal.history(first)[0].payload["flow"]["priority"] == 4
    assert [runner.journal.runs[r].status for r in (first, second)] == ["completed"] * 2


def test_a_priority_alone_is_no_limit() -> None:
    @workflow(name="sf.ranked", priority=3)
    def ranked(ctx: Any) -> None: ...

    assert new_run(ranked).flow is None
