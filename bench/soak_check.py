"""The soak's judge: given rows read from the journal, list every exactly-once defect.

Pure functions over plain values (no database), so that each defect can be shown to be
caught with hand-made rows (tests/bench/test_soak_check.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

SCHEDULES = {"activity_scheduled", "timer_scheduled", "child_started", "compensation_scheduled"}
OUTCOMES = {
    "activity_completed", "activity_failed", "timer_fired", "signal_received",
    "child_completed", "child_failed", "child_cancelled",
    "compensation_completed", "compensation_failed",
}  # fmt: skip
# Commands whose one event is both the command and its outcome.
SELF_CONTAINED = {"side_effect", "patch_marker"}
TERMINAL = {
    "run_completed": "completed",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
    "run_continued": "continued",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRow:
    seq: int
    type: str
    command_id: str = ""
    payload: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalRow:
    id: int
    chain_root: str
    name: str
    dedupe_key: str | None
    consumed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SentSignal:
    chain_root: str
    name: str
    dedupe_key: str


@dataclass
class Verdict:
    """Defects by kind; the soak passes when every list is empty."""

    defects: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, detail: str) -> None:
        self.defects[kind].append(detail)

    def count(self, kind: str) -> int:
        return len(self.defects.get(kind, []))

    @property
    def ok(self) -> bool:
        return not any(self.defects.values())


def check_history(verdict: Verdict, run_id: str, status: str, events: Sequence[EventRow]) -> None:
    """Contiguous seq from 1, one terminal event last and matching the status, and each
    command with at most one schedule and exactly one outcome (a cancelled run may leave
    commands without one: their tasks and timers were cancelled)."""
    seqs = [event.seq for event in events]
    if seqs != list(range(1, len(events) + 1)):
        verdict.add("seq_gap", f"run {run_id}: seq {seqs} is not 1..{len(events)}")
    if not events or events[0].type != "run_started":
        verdict.add("missing_event", f"run {run_id}: does not begin with run_started")
    terminals = [event for event in events if event.type in TERMINAL]
    if len(terminals) > 1:
        verdict.add("duplicate_event", f"run {run_id}: {len(terminals)} terminal events")
    if status in TERMINAL.values():
        if not terminals:
            verdict.add("missing_event", f"run {run_id}: {status} without a terminal event")
        elif TERMINAL[terminals[-1].type] != status or events[-1] is not terminals[-1]:
            verdict.add(
                "terminal_mismatch",
                f"run {run_id}: status {status}, last event {events[-1].type}",
            )
    schedules: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for event in events:
        if event.type in SCHEDULES:
            schedules[event.command_id] += 1
        elif event.type in OUTCOMES:
            outcomes[event.command_id] += 1
        elif event.type in SELF_CONTAINED:
            own[event.command_id] += 1
    for command, count in (schedules + own).items():
        if count > 1:
            verdict.add("duplicate_event", f"run {run_id}: command {command} journaled {count}x")
    for command, count in outcomes.items():
        if count > 1:
            verdict.add("duplicate_event", f"run {run_id}: {count} outcomes for {command}")
    if status == "cancelled":
        return
    for command in schedules:
        if outcomes[command] == 0 and status in TERMINAL.values():
            verdict.add("missing_event", f"run {run_id}: no outcome for {command}")


def check_signals(
    verdict: Verdict,
    sent: Iterable[SentSignal],
    rows: Sequence[SignalRow],
    received: Mapping[str, Sequence[int]],
    live: Set[str] = frozenset(),
) -> None:
    """Each signal sent (however often, under one dedupe key) is stored once and received
    once: ``received`` maps a chain root to the signal ids its signal_received events name.
    A chain in ``live`` (not drained) may not have taken its signal yet: that is reported
    as ``unreceived_live``, not as lost."""
    stored: dict[tuple[str, str, str | None], list[SignalRow]] = defaultdict(list)
    for row in rows:
        stored[(row.chain_root, row.name, row.dedupe_key)].append(row)
    for signal in set(sent):
        found = stored.get((signal.chain_root, signal.name, signal.dedupe_key), [])
        what = f"signal {signal.name!r} ({signal.dedupe_key}) to chain {signal.chain_root}"
        if not found:
            verdict.add("lost_signal", f"{what}: never stored")
            continue
        if len(found) > 1:
            verdict.add("duplicate_signal", f"{what}: stored {len(found)}x")
        for row in found:
            taken = list(received.get(signal.chain_root, ())).count(row.id)
            if (taken == 0 or not row.consumed) and signal.chain_root in live:
                verdict.add("unreceived_live", f"{what}: stored as {row.id}, run still live")
            elif taken == 0 or not row.consumed:
                verdict.add("lost_signal", f"{what}: stored as {row.id}, never received")
            elif taken > 1:
                verdict.add("duplicate_signal", f"{what}: received {taken}x")


def check_outcome(
    verdict: Verdict,
    label: str,
    status: str,
    result: Any,
    want_status: str,
    want_result: Any,
) -> None:
    """A seeded run's chain ended as it should, with the result computed from its input."""
    if status != want_status:
        verdict.add("wrong_status", f"{label}: {status}, expected {want_status}")
    elif want_status == "completed" and result != want_result:
        verdict.add("wrong_result", f"{label}: result {result!r}, expected {want_result!r}")


def reruns(lines: Iterable[tuple[str, int, int]], flaky_keys: set[str]) -> dict[str, list[int]]:
    """Activity bodies that ran more often than needed, by idempotency key, with the pids
    of every execution. ``lines`` holds (key, attempt, pid); a flaky key's deliberate
    first-attempt failure is needed, not a re-run."""
    runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for key, attempt, pid in lines:
        runs[key].append((attempt, pid))
    extra: dict[str, list[int]] = {}
    for key, executions in runs.items():
        needed = 1 + (key in flaky_keys and any(attempt == 1 for attempt, _ in executions))
        if len(executions) > needed:
            extra[key] = [pid for _, pid in executions]
    return extra
