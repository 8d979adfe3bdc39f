"""Racing waits on both journals: a signal waiter beats a timer, and the losing timer is
cancelled with the run's end."""

from __future__ import annotations

from tests.testapp import reliability as rl

from .conftest import Harness


def test_an_approval_beats_its_reminder(harness: Harness) -> None:
    run = harness.start(rl.approval_or_reminder)
    harness.drain()
    harness.sent.send(harness.journal.deliver_signal(run, "approval", {"by": "ann"}, None))
    harness.drain()
    assert harness.run(run)["result"] == {"approved": {"by": "ann"}}
    received = [e for e in harness.journal.history(run) if e.type == "signal_received"]
    assert [e.command_id for e in received] == ["0:signal:approval"]


def test_a_reminder_fires_first_then_the_approval_is_awaited(harness: Harness) -> None:
    run = harness.start(rl.approval_or_reminder)
    harness.drain()
    harness.make_timers_due(run)
    harness.sent.send(harness.journal.fire_due_timers(10))
    harness.drain()
    harness.sent.send(harness.journal.deliver_signal(run, "approval", "ok", None))
    harness.drain()
    assert harness.run(run)["result"] == {"reminded": True, "then": "ok"}
