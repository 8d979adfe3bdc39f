"""Sagas, child workflows, cancellation cascade and continue_as_new on both journals."""

from __future__ import annotations

from typing import Any

from tests.testapp import workflows as wf

from .conftest import Harness


def scheduled(harness: Harness, run_id: str, kind: str) -> list[Any]:
    return [e for e in harness.journal.history(run_id) if e.type == f"{kind}_scheduled"]


def test_saga_compensates_in_lifo_order(harness: Harness) -> None:
    run_id = harness.start(wf.saga, ["flight", "hotel", "car"])
    harness.drain()
    assert harness.run(run_id)["result"] == {"status": "rolled back", "failed": []}
    compensations = scheduled(harness, run_id, "compensation")
    assert [e.payload["args"] for e in compensations] == [["car"], ["hotel"], ["flight"]]
    types = harness.types(run_id)
    # sequential: each compensation finishes before the next is scheduled
    tail = types[types.index("compensation_scheduled") :]
    assert tail[:6] == ["compensation_scheduled", "compensation_completed"] * 3


def test_parallel_compensation_schedules_all_at_once(harness: Harness) -> None:
    run_id = harness.start(wf.saga, ["flight", "hotel", "car"], True)
    harness.drain()
    types = harness.types(run_id)
    first = types.index("compensation_scheduled")
    assert types[first : first + 3] == ["compensation_scheduled"] * 3
    assert types.count("compensation_completed") == 3


def test_failed_compensation_is_journaled_and_does_not_stop_the_others(
    harness: Harness,
) -> None:
    run_id = harness.start(wf.saga, ["flight", "broken", "car"])
    harness.drain()
    result = harness.run(run_id)["result"]
    assert result == {"status": "rolled back", "failed": ["cannot undo broken"]}
    assert harness.types(run_id).count("compensation_failed") == 1
    assert harness.types(run_id).count("compensation_completed") == 2


def test_fan_out_children_and_fan_in_in_order(harness: Harness) -> None:
    run_id = harness.start(wf.fan_out_children, 5)
    harness.drain()
    assert harness.run(run_id)["result"] == [0, 2, 4, 6, 8]
    children = [e.payload["run_id"] for e in harness.journal.history(run_id)
                if e.type == "child_started"]  # fmt: skip
    assert len(set(children)) == 5
    for child_id in children:
        child = harness.run(child_id)
        assert child["status"] == "completed"
        assert str(child["parent_run_id"]) == run_id


def test_child_ids_derive_from_the_parent_and_the_command(harness: Harness) -> None:
    run_id = harness.start(wf.fan_out_children, 2)
    harness.drain()
    other = harness.start(wf.fan_out_children, 2)
    harness.drain()
    ids = [
        [e.payload["run_id"] for e in harness.journal.history(r) if e.type == "child_started"]
        for r in (run_id, other)
    ]
    assert not set(ids[0]) & set(ids[1])
    assert len(set(ids[0])) == 2


def test_a_failing_child_surfaces_as_an_error_the_parent_handles(harness: Harness) -> None:
    run_id = harness.start(wf.parent_of_failure)
    harness.drain()
    assert harness.run(run_id)["result"] == "handled: the child gives up"
    assert "child_failed" in harness.types(run_id)


def test_cancel_cascades_through_three_levels(harness: Harness) -> None:
    root = harness.start(wf.tree_root)
    harness.drain()
    mid = next(e.payload["run_id"] for e in harness.journal.history(root)
               if e.type == "child_started")  # fmt: skip
    leaf = next(e.payload["run_id"] for e in harness.journal.history(mid)
                if e.type == "child_started")  # fmt: skip
    assert harness.run(leaf)["status"] == "suspended"  # sleeping for an hour

    harness.sent.send(harness.journal.request_cancel(root, "operator", terminate=False))
    harness.drain()
    for run_id in (root, mid, leaf):
        assert harness.run(run_id)["status"] == "cancelled", run_id
        assert "cancel_requested" in harness.types(run_id)
    compensations = scheduled(harness, root, "compensation")
    assert [e.payload["args"] for e in compensations] == [["root"]]  # cleanup ran, once
    assert harness.types(root)[-1] == "run_cancelled"


def test_terminate_ends_the_whole_tree_at_once(harness: Harness) -> None:
    root = harness.start(wf.tree_root)
    harness.drain()
    harness.sent.send(harness.journal.request_cancel(root, "stop now", terminate=True))
    harness.drain()
    assert harness.run(root)["status"] == "cancelled"
    assert "compensation_scheduled" not in harness.types(root)  # no cleanup on terminate


def test_continue_as_new_chain_consumes_signals_at_the_tip(harness: Harness) -> None:
    root = harness.start(wf.cycles, 1, [])
    harness.drain()
    # cycle 3 waits for a signal; deliver it to the root id
    harness.sent.send(harness.journal.deliver_signal(root, "poke", "hello", "once"))
    harness.sent.send(harness.journal.deliver_signal(root, "poke", "dup", "once"))
    harness.drain()
    assert harness.run(root)["status"] == "continued"
    chain = [root]
    while True:
        history = harness.journal.history(chain[-1])
        last = history[-1]
        if last.type != "run_continued":
            break
        chain.append(last.payload["next_run_id"])
        assert len(history) <= 6  # each incarnation's history stays small
    assert len(chain) == 5
    assert harness.run(chain[-1])["result"] == {"cycle": 5, "seen": ["hello"]}
    assert {str(harness.run(r)["chain_root_id"]) for r in chain} == {root}


def test_signal_buffered_before_continue_moves_to_the_successor(harness: Harness) -> None:
    root = harness.start(wf.cycles, 2, [])
    harness.sent.send(harness.journal.deliver_signal(root, "poke", "early", None))
    harness.drain()
    tip = root
    while (last := harness.journal.history(tip)[-1]).type == "run_continued":
        tip = last.payload["next_run_id"]
    assert harness.run(tip)["result"] == {"cycle": 5, "seen": ["early"]}


def test_cancel_of_a_continued_run_reaches_the_tip(harness: Harness) -> None:
    root = harness.start(wf.cycles, 2, [])
    harness.drain()  # cycle 3 waits for "poke"
    harness.sent.send(harness.journal.request_cancel(root, "enough", terminate=False))
    harness.drain()
    tip = root
    while (last := harness.journal.history(tip)[-1]).type == "run_continued":
        tip = last.payload["next_run_id"]
    assert tip != root
    assert harness.run(tip)["status"] == "cancelled"
