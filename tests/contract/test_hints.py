"""Messages are hints: a forged first-advance message changes nothing; the signal mailbox
has a limit. On both journals."""

from __future__ import annotations

from typing import Any

import pytest

from continuum_django import SignalRejected, workflow
from continuum_django.engine.definitions import WorkflowDefinition
from continuum_django.engine.local import new_run
from tests.testapp import workflows as wf

from .conftest import Harness


@workflow(name="tests.hints.continues_at_once")
def continues_at_once(ctx: Any, n: int = 0) -> int:
    if n == 0:
        ctx.continue_as_new(1)
    return n


def forged_start(target: WorkflowDefinition[..., Any], *args: Any) -> dict[str, Any]:
    """A ``run_started`` payload naming another workflow, input and seed than the run's."""
    return new_run(target, args, {}).started_payload() | {"seed": 424242}


def scheduled_activities(harness: Harness, run_id: str) -> list[str]:
    return [
        e.payload["activity"]
        for e in harness.journal.history(run_id)
        if e.type == "activity_scheduled"
    ]


# Each forged workflow's first activation takes another write path: one statement (an
# activity), a pipelined transaction (a child run), the row-locking one (continue_as_new).
@pytest.mark.parametrize(
    ("target", "args"),
    [(wf.retrying, ()), (wf.fan_out_children, (1,)), (continues_at_once, ())],
    ids=["one_statement", "pipelined", "locked"],
)
@pytest.mark.parametrize("eager_steps", [0, 200])
def test_a_forged_first_advance_message_changes_nothing(
    harness: Harness, target: WorkflowDefinition[..., Any], args: tuple[Any, ...], eager_steps: int
) -> None:
    run_id = harness.start(wf.three_steps, 1)
    stored = harness.journal.history(run_id)[0].payload
    worker = harness.make_runtime("forger", eager_steps=eager_steps)
    worker.advance_run(run_id, forged_start(target, *args))

    history = harness.journal.history(run_id)
    assert history[0].payload == stored  # the run's start, as stored
    assert history[0].payload["workflow"] == "tests.three_steps"
    # The message was ignored: the run advanced as the database says, A's first command.
    assert scheduled_activities(harness, run_id)[:1] == [wf.add_one.name]
    assert not any(e.type in ("child_started", "run_continued") for e in history)
    harness.drain()
    assert harness.run(run_id)["status"] == "completed"
    assert harness.run(run_id)["result"] == {"value": 4, "text": "value is 4"}
    assert scheduled_activities(harness, run_id) == [
        wf.add_one.name,
        wf.double.name,
        wf.describe.name,
    ]
    assert len(harness.task_ids(run_id)) == 3  # no task of B's, not even a cancelled one


def test_a_first_advance_message_that_matches_the_run_is_used(harness: Harness) -> None:
    run_id = harness.start(wf.three_steps, 2)
    started = harness.journal.history(run_id)[0].payload
    harness.runtime.advance_run(run_id, dict(started))
    assert scheduled_activities(harness, run_id) == [wf.add_one.name]
    harness.drain()
    assert harness.run(run_id)["result"] == {"value": 6, "text": "value is 6"}


def test_a_full_mailbox_refuses_a_signal_and_changes_nothing(harness: Harness) -> None:
    harness.journal._max_unread_signals = 3  # type: ignore[attr-defined]
    run_id = harness.start(wf.collector, 4)
    harness.drain()
    for n in range(3):
        harness.sent.send(harness.journal.deliver_signal(run_id, f"other-{n}", n, f"k-{n}"))
    before = dict(harness.run(run_id))
    with pytest.raises(SignalRejected, match=r"holds 3 unread signals.*'item' was not delivered"):
        harness.journal.deliver_signal(run_id, "item", "x", None)
    assert harness.run(run_id) == before  # not woken, nothing written
    # A repeated dedupe key is still a quiet no-op.
    assert not harness.journal.deliver_signal(run_id, "other-0", 0, "k-0").runs
    assert harness.run(run_id) == before


def test_a_mailbox_takes_signals_again_once_the_run_reads_them(harness: Harness) -> None:
    harness.journal._max_unread_signals = 2  # type: ignore[attr-defined]
    run_id = harness.start(wf.collector, 3)
    harness.drain()
    for payload in ("a", "b"):
        harness.sent.send(harness.journal.deliver_signal(run_id, "item", payload, None))
    with pytest.raises(SignalRejected):
        harness.journal.deliver_signal(run_id, "item", "c", None)
    harness.drain()  # the run takes both
    harness.sent.send(harness.journal.deliver_signal(run_id, "item", "c", None))
    harness.drain()
    assert harness.run(run_id)["result"] == ["a", "b", "c"]
