"""Due timers fired a batch at a time on Postgres (`journal.timers.fire_batch`): each exactly
once, with gapless seqs, under concurrent sweeps, in a constant number of statements."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from continuum_django.engine.journal import Dispatch
from continuum_django.journal import OrmJournal
from continuum_django.models import Timer, WorkflowEvent, WorkflowRun
from tests.factories import EventFactory, RunFactory

pytestmark = pytest.mark.django_db(transaction=True)

PAST = "2000-01-01T00:00Z"


def _sleeping(timers: int = 1, **fields: object) -> WorkflowRun:
    """A run with one event (``run_started``) and ``timers`` timers due long ago."""
    run = RunFactory(last_seq=1, revision=3, **fields)
    EventFactory(run=run, seq=1)
    for n in range(timers):
        Timer.objects.create(run=run, command_id=f"{n}:timer:sleep", fire_at=PAST)
    return run


def _fired(run: WorkflowRun) -> list[tuple[int, str]]:
    rows = WorkflowEvent.objects.filter(run=run, type="timer_fired").order_by("seq")
    return list(rows.values_list("seq", "command_id"))


def test_a_batch_appends_each_timer_fired_in_order_and_wakes_each_run_once() -> None:
    one, two = _sleeping(1), _sleeping(2)
    dispatch = OrmJournal().fire_due_timers(500)
    assert sorted(dispatch.runs) == sorted([(str(one.id), None), (str(two.id), None)])
    assert _fired(one) == [(2, "0:timer:sleep")]
    assert _fired(two) == [(2, "0:timer:sleep"), (3, "1:timer:sleep")]
    for run, last_seq in ((one, 2), (two, 3)):
        row = WorkflowRun.objects.get(pk=run.pk)
        assert (row.last_seq, row.revision) == (last_seq, 4)
        assert row.next_wakeup_at is not None and row.next_wakeup_at <= timezone.now()
        assert row.updated_at > run.updated_at
        event = WorkflowEvent.objects.get(run=run, seq=2)
        assert event.payload is None and event.created_at == row.updated_at
    assert not Timer.objects.filter(fired=False).exists()
    assert OrmJournal().fire_due_timers(500).runs == []  # nothing fires twice


def test_a_wake_up_already_due_stays_and_a_later_one_comes_forward() -> None:
    early = timezone.now() - dt.timedelta(hours=1)
    due = _sleeping(next_wakeup_at=early)
    later = _sleeping(next_wakeup_at=timezone.now() + dt.timedelta(days=1))
    OrmJournal().fire_due_timers(500)
    assert WorkflowRun.objects.get(pk=due.pk).next_wakeup_at == early
    assert WorkflowRun.objects.get(pk=later.pk).next_wakeup_at <= timezone.now()


def test_the_statements_per_batch_do_not_grow_with_the_batch() -> None:
    def statements(runs: int) -> int:
        for _ in range(runs):
            _sleeping(2)
        with CaptureQueriesContext(connection) as sent:
            assert len(OrmJournal().fire_due_timers(500).runs) == runs
        return len(sent.captured_queries)

    assert statements(3) == statements(60) == 1


def test_a_limit_bounds_one_batch_and_a_run_takes_all_its_due_timers() -> None:
    for _ in range(5):
        _sleeping(1)
    assert len(OrmJournal().fire_due_timers(3).runs) == 3
    assert len(OrmJournal().fire_due_timers(3).runs) == 2
    two = _sleeping(2)
    assert OrmJournal().fire_due_timers(1).runs == [(str(two.id), None)]
    assert _fired(two) == [(2, "0:timer:sleep"), (3, "1:timer:sleep")]
    assert WorkflowEvent.objects.filter(type="timer_fired").count() == 7


def test_the_batch_finds_due_timers_by_the_open_timers_index() -> None:
    from continuum_django.journal.timers import _sql

    for _ in range(3):
        _sleeping()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {_sql('default')}", [500, "timer_fired"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "continuum_timer_due" in plan, plan


def test_an_ended_run_gets_no_event_and_its_timer_is_done_with() -> None:
    ended = _sleeping(status="completed")
    assert OrmJournal().fire_due_timers(500).runs == []
    assert _fired(ended) == []
    assert Timer.objects.get(run=ended).fired
    assert WorkflowRun.objects.get(pk=ended.pk).last_seq == 1


def test_a_run_past_its_deadline_is_left_to_time_out_runs() -> None:
    late = _sleeping(deadline=timezone.now() - dt.timedelta(seconds=1))
    live = _sleeping(deadline=timezone.now() + dt.timedelta(days=1))
    assert OrmJournal().fire_due_timers(500).runs == [(str(live.id), None)]
    assert _fired(late) == []
    assert WorkflowRun.objects.get(pk=late.pk).last_seq == 1
    timer = Timer.objects.get(run=late)
    assert not timer.fired and not timer.cancelled


def test_a_run_locked_by_its_writer_is_skipped_and_fired_by_the_next_batch() -> None:
    busy, free = _sleeping(), _sleeping()
    locked = threading.Event()
    release = threading.Event()

    def writer() -> None:  # holds the run's row lock, as a claim or a commit does
        try:
            with transaction.atomic():
                WorkflowRun.objects.select_for_update().get(pk=busy.pk)
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=writer)
    holder.start()
    try:
        assert locked.wait(30)
        assert OrmJournal().fire_due_timers(500).runs == [(str(free.id), None)]
    finally:
        release.set()
        holder.join(30)
    assert OrmJournal().fire_due_timers(500).runs == [(str(busy.id), None)]
    assert _fired(busy) == [(2, "0:timer:sleep")]


def test_two_concurrent_sweeps_fire_every_timer_exactly_once() -> None:
    runs = [_sleeping(1 + n % 3) for n in range(150)]
    start = threading.Barrier(2)
    dispatches: list[Dispatch] = []

    def sweep() -> None:
        try:
            journal = OrmJournal()
            start.wait(30)
            while batch := journal.fire_due_timers(20).runs:
                dispatches.append(Dispatch(runs=batch))
        finally:
            connections.close_all()

    sweeps = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in sweeps:
        thread.start()
    for thread in sweeps:
        thread.join(120)

    woken = [run_id for d in dispatches for run_id, _ in d.runs]
    assert sorted(woken) == sorted(str(r.id) for r in runs)  # each run woken exactly once
    assert not Timer.objects.filter(fired=False).exists()
    for n, run in enumerate(runs):
        timers = 1 + n % 3
        assert _fired(run) == [(2 + k, f"{k}:timer:sleep") for k in range(timers)]
        row = WorkflowRun.objects.get(pk=run.pk)
        assert (row.last_seq, row.revision) == (1 + timers, 4)


def test_one_sweep_fires_batch_after_batch_before_it_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from continuum_django.worker import runtime

    monkeypatch.setattr(runtime(), "sweep_limit", 2)
    monkeypatch.setattr(runtime(), "timer_batches", 2)
    for _ in range(5):
        _sleeping()
    assert runtime().sweep()["timers_fired"] == 4  # two full batches of two runs
    assert runtime().sweep()["timers_fired"] == 1
    assert not Timer.objects.filter(fired=False).exists()
