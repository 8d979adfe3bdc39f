"""The soak's judge reports each exactly-once defect in hand-made journal rows, and passes
a clean history."""

from __future__ import annotations

import pytest

from bench.soak_check import (
    EventRow,
    SentSignal,
    SignalRow,
    Verdict,
    check_history,
    check_outcome,
    check_signals,
    reruns,
)

A = "0:activity:soak.add"


def clean() -> list[EventRow]:
    return [
        EventRow(seq=1, type="run_started"),
        EventRow(seq=2, type="side_effect", command_id="0:side_effect:x"),
        EventRow(seq=3, type="activity_scheduled", command_id=A),
        EventRow(seq=4, type="activity_completed", command_id=A),
        EventRow(seq=5, type="signal_received", command_id="2:signal:go", payload={"signal_id": 9}),
        EventRow(seq=6, type="run_completed"),
    ]


def judged(events: list[EventRow], status: str = "completed") -> Verdict:
    verdict = Verdict()
    check_history(verdict, "r1", status, events)
    return verdict


def test_a_clean_history_passes() -> None:
    assert judged(clean()).ok


def test_a_gap_in_seq_is_reported() -> None:
    events = clean()
    events[3:] = [EventRow(seq=e.seq + 1, type=e.type, command_id=e.command_id) for e in events[3:]]
    assert judged(events).count("seq_gap") == 1


def test_a_duplicate_outcome_is_reported() -> None:
    events = clean()
    events.insert(4, EventRow(seq=5, type="activity_completed", command_id=A))
    events = [
        EventRow(seq=n, type=e.type, command_id=e.command_id) for n, e in enumerate(events, 1)
    ]
    verdict = judged(events)
    assert verdict.count("duplicate_event") == 1
    assert verdict.count("seq_gap") == 0


@pytest.mark.parametrize("duplicated", [1, 2])  # the schedule, the side effect
def test_a_command_journaled_twice_is_reported(duplicated: int) -> None:
    events = clean()
    copy = events[duplicated]
    events = [*events[:5], EventRow(seq=6, type=copy.type, command_id=copy.command_id)]
    events.append(EventRow(seq=7, type="run_completed"))
    assert judged(events).count("duplicate_event") == 1


def test_a_missing_outcome_is_reported_unless_the_run_was_cancelled() -> None:
    events = [e for e in clean() if e.type != "activity_completed"]
    events = [
        EventRow(seq=n, type=e.type, command_id=e.command_id) for n, e in enumerate(events, 1)
    ]
    assert judged(events).count("missing_event") == 1
    events[-1] = EventRow(seq=events[-1].seq, type="run_cancelled")
    assert judged(events, status="cancelled").ok


def test_two_terminal_events_or_one_not_last_are_reported() -> None:
    events = [*clean(), EventRow(seq=7, type="run_completed")]
    assert judged(events).count("duplicate_event") == 1
    assert judged(clean(), status="cancelled").count("terminal_mismatch") == 1
    assert judged(clean()[:-1]).count("missing_event") == 1


def test_a_missing_or_doubled_signal_is_reported() -> None:
    sent = [SentSignal(chain_root=root, name="go", dedupe_key=f"go-{root}") for root in "abcd"]
    rows = [
        SignalRow(id=1, chain_root="a", name="go", dedupe_key="go-a", consumed=True),
        # b: never stored; c: stored, never received
        SignalRow(id=3, chain_root="c", name="go", dedupe_key="go-c", consumed=False),
        SignalRow(id=4, chain_root="d", name="go", dedupe_key="go-d", consumed=True),
    ]
    verdict = Verdict()
    check_signals(verdict, [*sent, sent[0]], rows, {"a": [1], "d": [4, 4]})
    assert sorted(verdict.defects["lost_signal"]) == [
        "signal 'go' (go-b) to chain b: never stored",
        "signal 'go' (go-c) to chain c: stored as 3, never received",
    ]
    assert verdict.defects["duplicate_signal"] == ["signal 'go' (go-d) to chain d: received 2x"]


def test_a_wrong_status_or_result_is_reported() -> None:
    verdict = Verdict()
    check_outcome(verdict, "run 1", "completed", {"sum": 3}, "completed", {"sum": 3})
    assert verdict.ok
    check_outcome(verdict, "run 2", "failed", None, "completed", {"sum": 3})
    check_outcome(verdict, "run 3", "completed", {"sum": 4}, "completed", {"sum": 3})
    assert (verdict.count("wrong_status"), verdict.count("wrong_result")) == (1, 1)


def test_reruns_count_bodies_beyond_the_needed_ones() -> None:
    lines = [
        ("once", 1, 10),
        ("killed", 1, 11),
        ("killed", 2, 12),
        ("flaky", 1, 13),  # fails on purpose: needed
        ("flaky", 2, 13),
        ("flaky-killed", 1, 14),
        ("flaky-killed", 2, 11),
        ("flaky-killed", 3, 15),
    ]
    assert reruns(lines, {"flaky", "flaky-killed"}) == {
        "killed": [11, 12],
        "flaky-killed": [14, 11, 15],
    }


def test_a_signal_a_live_run_has_not_taken_yet_is_not_called_lost() -> None:
    sent = [SentSignal(chain_root="a", name="go", dedupe_key="go-a")]
    rows = [SignalRow(id=1, chain_root="a", name="go", dedupe_key="go-a", consumed=False)]
    verdict = Verdict()
    check_signals(verdict, sent, rows, {}, live={"a"})
    assert (verdict.count("lost_signal"), verdict.count("unreceived_live")) == (0, 1)
    assert not verdict.ok
