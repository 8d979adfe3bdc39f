"""Reads the soak's journal and activity-body log back and reports the exactly-once figures."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .report import Report
from .soak_check import (
    EventRow,
    SentSignal,
    SignalRow,
    Verdict,
    check_history,
    check_outcome,
    check_signals,
    reruns,
)
from .soak_workflows import expected, is_flaky

TERMINAL_STATUSES = {"completed", "failed", "cancelled", "continued"}

DEFECTS = [
    ("seq_gap", "soak.seq_gaps"),
    ("duplicate_event", "soak.duplicate_events"),
    ("missing_event", "soak.missing_events"),
    ("terminal_mismatch", "soak.terminal_mismatches"),
    ("lost_signal", "soak.lost_signals"),
    ("unreceived_live", "soak.signals_waiting_in_live_runs"),
    ("duplicate_signal", "soak.duplicate_signals"),
    ("wrong_status", "soak.wrong_status"),
    ("wrong_result", "soak.wrong_results"),
]
# A body re-run is explained by a Postgres restart when it falls this close to one: its
# result could not be recorded, so the attempt's lease ran out and it ran again.
RESTART_SLACK = 30.0


def judge(
    report: Report,
    ids: list[str],
    sent: dict[str, int],
    body_log: Path,
    killed_pids: set[int],
    restart_windows: list[tuple[float, float]],
) -> bool:
    from continuum_django.models import ActivityTask, Signal, WorkflowEvent, WorkflowRun

    from .soak import cancelled

    runs = {str(r["id"]): r for r in WorkflowRun.objects.values()}
    events: dict[str, list[EventRow]] = defaultdict(list)
    rows = WorkflowEvent.objects.order_by("run_id", "seq").values_list(
        "run_id", "seq", "type", "command_id", "payload"
    )
    for owner, seq, type_, command_id, payload in rows.iterator(chunk_size=5000):
        events[str(owner)].append(
            EventRow(seq=seq, type=type_, command_id=command_id, payload=payload)
        )
    verdict = Verdict()
    run_ok: dict[str, bool] = {}
    for rid, run in runs.items():
        before = sum(len(v) for v in verdict.defects.values())
        check_history(verdict, rid, run["status"], events[rid])
        if run["parent_run_id"] is not None:
            check_outcome(verdict, f"child {rid}", run["status"], None, "completed", None)
        run_ok[rid] = sum(len(v) for v in verdict.defects.values()) == before

    successor = {
        str(r["continued_from_id"]): rid for rid, r in runs.items() if r["continued_from_id"]
    }
    exactly_once = 0
    for i, run_id in enumerate(ids):
        chain = [run_id]
        while chain[-1] in successor:
            chain.append(successor[chain[-1]])
        tip = runs[chain[-1]]
        want = "cancelled" if cancelled(i) else "completed"
        before = verdict.count("wrong_status") + verdict.count("wrong_result")
        check_outcome(
            verdict, f"run {i} ({run_id})", tip["status"], tip["result"], want, expected(i)
        )
        right = verdict.count("wrong_status") + verdict.count("wrong_result") == before
        exactly_once += right and all(run_ok[r] for r in chain)

    root_of = {rid: str(r["chain_root_id"] or rid) for rid, r in runs.items()}
    received: dict[str, list[int]] = defaultdict(list)
    for run_id, history in events.items():
        for event in history:
            if event.type == "signal_received":
                received[root_of[run_id]].append(event.payload["signal_id"])
    signals = [
        SignalRow(id=s.id, chain_root=str(s.chain_root_id), name=s.name,
                  dedupe_key=s.dedupe_key, consumed=s.consumed_by_id is not None)
        for s in Signal.objects.all()
    ]  # fmt: skip
    wanted = [
        SentSignal(chain_root=root_of[run_id], name="go", dedupe_key=f"go-{ids.index(run_id)}")
        for run_id in sent
    ]
    live = {root_of[rid] for rid, r in runs.items() if r["status"] not in TERMINAL_STATUSES}
    check_signals(verdict, wanted, signals, received, live)

    tasks = ActivityTask.objects.filter(activity="soak.flaky").values(
        "run_id", "command_id", "args"
    )
    flaky = {f"{t['run_id']}:{t['command_id']}" for t in tasks if is_flaky(t["args"][0])}
    lines, stamps = _bodies(body_log)
    extra = reruns(lines, flaky)
    unexplained = [
        key for key, pids in extra.items()
        if not killed_pids.intersection(pids) and not _near(stamps[key], restart_windows)
    ]  # fmt: skip

    report.count("soak.runs_in_journal", len(runs), "runs (seeded, children, successors)")
    report.count("soak.events", sum(len(v) for v in events.values()), "events")
    report.figure("soak.completed_exactly_once", 100.0 * exactly_once / len(ids), "%")
    for kind, name in DEFECTS:
        report.count(name, verdict.count(kind))
    report.count("soak.activity_bodies", len(lines), "executions")
    report.count("soak.activity_reruns", len(extra), "commands whose body ran again")
    report.count("soak.activity_reruns_unexplained", len(unexplained), "commands")
    for kind, details in verdict.defects.items():
        for detail in details[:5]:
            report.note(f"{kind}: {detail}")
    for key in unexplained[:5]:
        report.note(f"unexplained re-run: {key}")
    return verdict.ok


def _bodies(path: Path) -> tuple[list[tuple[str, int, int]], dict[str, list[float]]]:
    lines: list[tuple[str, int, int]] = []
    stamps: dict[str, list[float]] = defaultdict(list)
    if not path.exists():
        return lines, stamps
    for text in path.read_text().splitlines():
        parts = text.split("\t")
        if len(parts) != 4:
            continue  # a line cut by a kill -9 mid-write
        key, attempt, pid, stamp = parts
        lines.append((key, int(attempt), int(pid)))
        stamps[key].append(float(stamp))
    return lines, stamps


def _near(stamps: list[float], windows: list[tuple[float, float]]) -> bool:
    return any(
        start - RESTART_SLACK <= stamp <= end + RESTART_SLACK
        for stamp in stamps
        for start, end in windows
    )
