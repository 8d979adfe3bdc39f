"""Django signals for the lifecycle of runs, activities, timers and signals (issue 16)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.dispatch import Signal

import continuum_django as continuum
from continuum_django import lifecycle
from continuum_django.lifecycle import SignalObserver
from tests.contract.conftest import OrmHarness
from tests.testapp import reliability as rl
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db(transaction=True)

SIGNALS = [
    "run_started", "run_advanced", "run_ended", "run_parked", "cancel_requested",
    "activity_scheduled", "activity_attempted", "timer_scheduled", "signal_sent",
    "signal_received", "sweep_finished",
]  # fmt: skip


@pytest.fixture
def heard() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every lifecycle signal sent during the test, in order, with its arguments."""
    log: list[tuple[str, dict[str, Any]]] = []
    receivers = []
    for name in SIGNALS:

        def receiver(sender: Any, _heard_as: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal")
            log.append((_heard_as, kwargs))

        getattr(lifecycle, name).connect(receiver, weak=False)
        receivers.append((getattr(lifecycle, name), receiver))
    yield log
    for signal, receiver in receivers:
        signal.disconnect(receiver)


@pytest.fixture
def harness() -> OrmHarness:
    harness = OrmHarness()
    harness.runtime.observer = SignalObserver()
    return harness


def _names(heard: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in heard]


def test_a_run_is_heard_from_start_to_end(heard: list, harness: OrmHarness) -> None:
    run = continuum.start(wf.three_steps, args=[1])
    harness.sent.runs.append(run.id)  # the start's own message went to the broker
    harness.drain()
    names = _names(heard)
    assert names[0] == "run_started"
    assert heard[0][1] == {"run_id": run.id, "workflow": "tests.three_steps", "version": 1}
    assert names.count("activity_scheduled") == 3
    attempts = [kw for name, kw in heard if name == "activity_attempted"]
    assert [a["outcome"] for a in attempts] == ["completed"] * 3
    assert all(a["run_id"] == run.id and a["attempt"] == 1 for a in attempts)
    assert names[-2:] == ["run_advanced", "run_ended"]
    assert heard[-1][1]["status"] == "completed"


def test_retries_timers_signals_and_cancels_are_heard(heard: list, harness: OrmHarness) -> None:
    failing = harness.start(rl.retry_me)
    harness.drain()
    outcomes = [kw["outcome"] for name, kw in heard if name == "activity_attempted"]
    assert outcomes == ["completed", "retrying", "failed"]
    assert heard[-1][0] == "run_ended" and heard[-1][1]["status"] == "failed"
    assert heard[-1][1]["run_id"] == failing

    sleeping = harness.start(wf.sleeper, 3600)
    harness.drain()
    timers = [kw for name, kw in heard if name == "timer_scheduled"]
    assert [t["run_id"] for t in timers] == [sleeping]

    waiting = harness.start(wf.waiter)
    harness.drain()
    continuum.signal(waiting, "go", "payload")
    harness.sent.runs.append(waiting)
    harness.drain()
    assert ("signal_sent", {"run_id": waiting, "name": "go"}) in heard
    assert ("signal_received", {"run_id": waiting, "name": "go"}) in heard

    continuum.cancel(sleeping, reason="enough")
    assert (
        "cancel_requested",
        {"run_id": sleeping, "reason": "enough", "terminate": False},
    ) in heard
    harness.runtime.sweep()
    assert heard[-1][0] == "sweep_finished"
    assert set(heard[-1][1]["counts"]) >= {"timers_fired", "runs_redispatched"}


def test_a_receiver_that_raises_does_not_stop_the_run(harness: OrmHarness) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signal: Signal = lifecycle.run_advanced
    signal.connect(broken, weak=False)
    try:
        run_id = harness.start(wf.three_steps, 1)
        harness.drain()
    finally:
        signal.disconnect(broken)
    assert harness.run(run_id)["status"] == "completed"
