"""The step path on Postgres: one transaction per step, and a failed one redone write by write."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.db.models.functions import Now
from django.utils import timezone

import continuum_django as continuum
from continuum_django import activity, workflow
from continuum_django.engine.journal import RunClaim
from continuum_django.engine.local import new_run
from continuum_django.journal.base import RUN_ENDED
from continuum_django.journal.runs import end_notice
from continuum_django.journal.starts import verified_start
from continuum_django.models import ActivityTask, Timer, WorkflowEvent, WorkflowRun
from continuum_django.worker import runtime
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db(transaction=True)

BODIES: Counter[str] = Counter()


@activity(name="tests.step_path.counted")
def counted(tag: str) -> str:
    BODIES[tag] += 1
    return tag.upper()


@workflow(name="tests.step_path.two_counted")
def two_counted(ctx: Any, tag: str) -> list[str]:
    return [ctx.activity(counted, f"{tag}-1"), ctx.activity(counted, f"{tag}-2")]


@activity(name="tests.step_path.poke")
def poke(tag: str, activity_context: continuum.ActivityContext) -> str:
    BODIES[tag] += 1
    if tag == "poke-1":
        continuum.signal(activity_context.run_id, "poked")
    return tag.upper()


@workflow(name="tests.step_path.pokes_itself")
def pokes_itself(ctx: Any) -> dict[str, Any]:
    first = ctx.activity(poke, "poke-1")
    poked = ctx.wait_signal("poked", timeout=60) is None
    return {"first": first, "poked": poked, "second": ctx.activity(poke, "poke-2")}


@workflow(name="tests.step_path.two_signals")
def two_signals(ctx: Any) -> list[Any]:
    first = ctx.wait_signal("a")
    done = ctx.activity(counted, "between")
    return [first, done, ctx.wait_signal("b", timeout=60)]


@activity(name="tests.step_path.outlives_its_lease")
def outlives_its_lease(activity_context: continuum.ActivityContext) -> str:
    """Ends after its lease lapsed (moved into the past in the database, as the sweep
    would see it)."""
    ActivityTask.objects.filter(run_id=activity_context.run_id, status="running").update(
        lease_expires_at=Now() - dt.timedelta(minutes=1)
    )
    return "too late"


@workflow(name="tests.step_path.late_second")
def late_second(ctx: Any) -> list[str]:
    return [
        ctx.activity(counted, "late-1"),
        ctx.activity(outlives_its_lease),
        ctx.activity(counted, "late-3"),
    ]


class Counts(Counter[str]):
    """Counts by kind, and the statements sent (``sent``)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []


@contextmanager
def commits_and_statements() -> Iterator[Counts]:
    """Count the statements this connection sends and the transactions that commit writes
    (a read outside a transaction commits nothing)."""
    counts = Counts()

    def committed() -> None:
        counts["commits"] += 1

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        counts["statements"] += 1
        counts.sent.append(sql)
        counts["one_statement"] += sql.startswith("WITH step_run")
        if not connection.in_atomic_block:
            counts["commits"] += not sql.lstrip().upper().startswith("SELECT")
        elif not any(entry[1] is committed for entry in connection.run_on_commit):
            connection.on_commit(committed)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield counts


def test_each_step_commits_once() -> None:
    run = wf.three_steps.start(5)
    with commits_and_statements() as counts:
        assert runtime().advance_run(run.id) == "completed"
    assert run.result(timeout=1) == {"value": 12, "text": "value is 12"}
    # The first advance, then each activity's result with the advance it wakes.
    assert counts["commits"] == 4
    # Two reads; then one statement for the first advance and one for each step, the last
    # one included (it leaves nothing open, and announces the end itself).
    assert counts["one_statement"] == 4
    assert counts["statements"] == 6, counts


def created(definition: Any, *args: Any) -> tuple[str, dict[str, Any]]:
    """Start a run as `start()` does; its id and the payload its first message carries."""
    run_id, _, dispatch = runtime().journal.create_run(new_run(definition, args))
    started = verified_start(run_id, dispatch.starts[run_id])
    assert started is not None
    return run_id, started


def test_a_new_run_s_first_advance_starts_from_its_message_without_reading_it() -> None:
    run_id, started = created(wf.three_steps, 5)
    assert started["workflow"] == "tests.three_steps" and started["input"]["args"] == [5]
    with commits_and_statements() as counts:
        assert runtime().advance_run(run_id, started) == "completed"
    assert continuum.result(run_id, timeout=1) == {"value": 12, "text": "value is 12"}
    assert counts["commits"] == 4
    # Two reads fewer than `test_each_step_commits_once`: the run and its history.
    assert counts["statements"] == counts["one_statement"] == 4, counts
    history = continuum.RunHandle(run_id).history()
    assert [e.seq for e in history] == list(range(1, len(history) + 1))


def test_a_started_payload_is_not_trusted_once_the_run_changed() -> None:
    run_id, started = created(wf.waiter)
    continuum.signal(run_id, "go", "early")  # after the message left: a new revision
    assert runtime().advance_run(run_id, started) == "completed"  # read under a lease
    assert continuum.result(run_id, timeout=1) == "early"

    run_id, started = created(wf.three_steps, 1)
    assert runtime().advance_run(run_id, started) == "completed"
    assert runtime().advance_run(run_id, started) == "skipped"  # the message came twice
    assert len(continuum.RunHandle(run_id).history()) == 8


def test_a_first_advance_that_reads_the_clock_is_redone_on_the_database_clock() -> None:
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    engine = replace(runtime(), clock=lambda: long_ago)  # a worker whose clock is far off

    run_id, started = created(wf.three_steps, 2)  # reads no clock: the worker's time stands
    assert engine.advance_run(run_id, started) == "completed"
    assert WorkflowEvent.objects.get(run_id=run_id, seq=2).created_at == long_ago

    run_id, started = created(wf.sleeper, 3600)  # its timer's due time comes from the clock
    assert engine.advance_run(run_id, started) == "suspended"
    fire_at = Timer.objects.get(run_id=run_id).fire_at
    assert fire_at > timezone.now() + dt.timedelta(minutes=59)  # the database's clock


@workflow(name="tests.step_path.by_key")
def by_key(ctx: Any, items: dict[str, int]) -> list[str]:
    return [ctx.activity(counted, key) for key in items]  # in the input's key order


def test_a_first_advance_from_its_message_replays_alike_from_the_database() -> None:
    run_id, started = created(by_key, {"zz": 1, "a": 2})
    engine = replace(runtime(), eager_steps=1)  # each advance reads the run back
    assert engine.advance_run(run_id, started) == "suspended"
    for _ in range(2):
        task = ActivityTask.objects.get(run_id=run_id, status="scheduled")
        engine.execute_activity(task.id)  # then advances the run from the database
    assert WorkflowRun.objects.get(pk=run_id).park_reason == ""  # no drift
    assert continuum.result(run_id, timeout=1) == ["A", "ZZ"]


def test_a_large_input_stays_out_of_the_first_message() -> None:
    run_id, _, dispatch = runtime().journal.create_run(new_run(wf.three_steps, ["x" * 5000]))
    assert dispatch.runs == [(run_id, None)] and dispatch.starts == {}


def test_a_speculated_advance_is_dropped_when_the_run_changed_meanwhile() -> None:
    """The activity signals its own run: the advance replayed before its result was written
    no longer holds. The result is written alone and the run advances again, seeing the
    signal; no activity body runs twice."""
    BODIES.clear()
    run = pokes_itself.start()
    assert runtime().advance_run(run.id) == "completed"
    assert run.result(timeout=1) == {"first": "POKE-1", "poked": True, "second": "POKE-2"}
    assert BODIES == {"poke-1": 1, "poke-2": 1}
    assert [e.type for e in run.history()] == [
        "run_started",
        "activity_scheduled", "activity_completed",
        "signal_received", "activity_scheduled", "activity_completed",
        "run_completed",
    ]  # fmt: skip


def test_a_speculated_advance_sees_the_signals_its_run_left_unread() -> None:
    """Two signals wait before the first advance, which takes one: the advance replayed
    after the activity, before its result is written, finds the other in the mailbox."""
    run = two_signals.start()
    run.signal("a", 1)
    run.signal("b", 2)
    assert runtime().advance_run(run.id) == "completed"
    assert run.result(timeout=1) == [1, "BETWEEN", 2]
    assert [e.type for e in run.history()] == [
        "run_started", "signal_received", "activity_scheduled", "activity_completed",
        "signal_received", "run_completed",
    ]  # fmt: skip


def test_an_advance_from_a_stale_snapshot_writes_nothing_and_goes_under_a_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal lands between the snapshot and its commit: the commit is refused and the run
    advances under a lease, from the history and mailbox as they are."""
    engine = runtime()
    journal = engine.journal
    snapshot = journal.snapshot_run
    run = wf.waiter.start()
    taken: list[RunClaim] = []

    def snapshot_then_signal(run_id: str) -> RunClaim | None:
        claim = snapshot(run_id)
        if claim is not None and not taken:
            taken.append(claim)
            continuum.signal(run_id, "go", {"n": 1})  # after the snapshot, before its commit
        return claim

    monkeypatch.setattr(journal, "snapshot_run", snapshot_then_signal)
    assert engine.advance_run(run.id) == "completed"
    assert taken and taken[0].mailbox == []  # the snapshot had not seen the signal
    assert run.result(timeout=1) == {"n": 1}
    types = [e.type for e in run.history()]
    assert types == ["run_started", "signal_received", "run_completed"]


def test_an_attempt_that_lost_its_lease_writes_nothing_not_even_the_run() -> None:
    """The step's transaction writes the run's row first, then the attempt's: when the
    attempt's lease lapsed, the run's UPDATE (already sent down the pipeline) is rolled
    back with it, and the run stays where the previous step left it."""
    BODIES.clear()
    run = late_second.start()
    assert runtime().advance_run(run.id) == "suspended"  # the late result was discarded
    stored = WorkflowRun.objects.get(pk=run.id)
    history = run.history()
    assert [e.type for e in history] == [
        "run_started", "activity_scheduled", "activity_completed", "activity_scheduled",
    ]  # fmt: skip
    assert (stored.last_seq, stored.status, stored.lease_owner) == (4, "suspended", "")
    second = ActivityTask.objects.get(run_id=run.id, command_id=history[-1].command_id)
    assert (second.status, second.result) == ("running", None)  # for the sweep to time out
    assert not ActivityTask.objects.filter(run_id=run.id, activity="tests.step_path.counted")[
        1:
    ].exists()  # the third activity, speculated after the late result, was never scheduled
    assert BODIES == {"late-1": 1}


def test_a_child_ending_takes_its_parent_lock_first() -> None:
    """A child's final step needs its parent's lock before its own: it runs write by write
    (a step transaction already holds the child's lock), and the parent hears the end."""
    engine = runtime()
    parent = wf.fan_out_children.start(2)
    assert engine.advance_run(parent.id) == "suspended"
    for child in WorkflowRun.objects.filter(parent_run_id=parent.id):
        assert engine.advance_run(str(child.id)) == "completed"
    assert engine.advance_run(parent.id) == "completed"
    assert parent.result(timeout=1) == [0, 2]


@workflow(name="tests.step_path.pokes_then_works")
def pokes_then_works(ctx: Any) -> dict[str, Any]:
    first = ctx.activity(poke, "poke-1")  # signals this run while it runs
    second = ctx.activity(poke, "poke-2")
    return {"first": first, "second": second, "poked": ctx.wait_signal("poked") is None}


def test_a_speculated_step_in_one_statement_writes_nothing_when_the_run_changed() -> None:
    """The advance speculated after poke-1 schedules poke-2 alone, so it would go as one
    statement; the signal poke-1 sent changed the run, so the statement writes nothing (not
    the result either), the result is written alone and the run advances from the database,
    scheduling poke-2 once."""
    BODIES.clear()
    run = pokes_then_works.start()
    with commits_and_statements() as counts:
        assert runtime().advance_run(run.id) == "completed"
    assert run.result(timeout=1) == {"first": "POKE-1", "second": "POKE-2", "poked": True}
    assert BODIES == {"poke-1": 1, "poke-2": 1}
    assert [e.type for e in run.history()] == [
        "run_started",
        "activity_scheduled", "activity_completed", "activity_scheduled",
        "activity_completed", "signal_received", "run_completed",
    ]  # fmt: skip
    assert ActivityTask.objects.filter(run_id=run.id).count() == 2
    # The first advance, then the speculation refused; the rest wait on a signal or end.
    assert counts["one_statement"] == 2


def test_a_last_step_in_one_statement_announces_the_end_as_the_probe_did() -> None:
    """The last step of a run that leaves nothing open goes as one statement, which sends
    the NOTIFY that `result()` waits for: the same notice `end_notice` makes."""
    listener = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    try:
        listener.execute(f"LISTEN {RUN_ENDED}")
        run = wf.three_steps.start(2)
        with commits_and_statements() as counts:
            assert runtime().advance_run(run.id) == "completed"
        heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    finally:
        listener.close()
    assert counts["statements"] == counts["one_statement"] + 2  # the two reads
    stored = WorkflowRun.objects.get(pk=run.id)
    assert heard == [end_notice(stored)]
    # Ids only: the result stays in the database, which `result()` reads.
    assert json.loads(heard[0]) == {"chain": run.id, "run": run.id}


@workflow(name="tests.step_path.first_of_two")
def first_of_two(ctx: Any) -> Any:
    done = ctx.wait_any(ctx.start_activity(counted, "one"), ctx.start_activity(counted, "two"))
    return done.result()


def test_a_last_step_that_leaves_work_open_closes_it() -> None:
    """A run that ends with an activity still scheduled (it waited for the first of two)
    ends the usual way, which finds the open task and cancels it, not in one statement."""
    run = first_of_two.start()
    assert runtime().advance_run(run.id) == "completed"  # the first activity ran here
    assert run.result(timeout=1) == "ONE"
    statuses = ActivityTask.objects.filter(run_id=run.id).values_list("status", flat=True)
    assert sorted(statuses) == ["cancelled", "completed"]


def test_start_inserts_the_run_and_its_first_event_in_one_statement() -> None:
    with commits_and_statements() as counts:
        run = wf.three_steps.start(1)
    assert counts["statements"] == counts["commits"] == 1, counts.sent
    stored = WorkflowRun.objects.get(pk=run.id)
    assert (stored.status, stored.last_seq, stored.revision) == ("pending", 1, 1)
    assert [e.type for e in run.history()] == ["run_started"]
    assert runtime().advance_run(run.id) == "completed"
