"""Run deadlines on Postgres: the stored deadline, the sweep's index, concurrent sweeps."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models.functions import Now
from django.test import Client
from django.urls import reverse

import continuum_django as continuum
from continuum_django.admin.triage import moment
from continuum_django.journal import OrmJournal
from continuum_django.models import WorkflowEvent, WorkflowRun
from continuum_django.worker import runtime
from tests.testapp import deadlines as dl


def db_now() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT STATEMENT_TIMESTAMP()")
        (now,) = cursor.fetchone()
    return now  # type: ignore[no-any-return]


def make_late(*run_ids: str) -> None:
    WorkflowRun.objects.filter(pk__in=run_ids).update(deadline=Now() - dt.timedelta(seconds=1))


@pytest.mark.django_db
def test_start_stores_the_deadline_on_the_database_clock() -> None:
    before = db_now()
    run = dl.sleeper.options(timeout=dt.timedelta(minutes=5)).start(3600)
    after = db_now()
    deadline = WorkflowRun.objects.get(pk=run.id).deadline
    assert deadline is not None
    assert before + dt.timedelta(minutes=5) <= deadline <= after + dt.timedelta(minutes=5)
    full = continuum.start(dl.sleeper, args=[1], timeout=90, idempotency_key="k-1")
    again = continuum.start(dl.sleeper, args=[1], timeout=90, idempotency_key="k-1")
    assert full == again  # the key still finds the run
    assert WorkflowRun.objects.get(pk=full.id).deadline is not None


@pytest.mark.django_db
def test_signal_with_start_takes_the_timeout_option() -> None:
    before = db_now()
    run = dl.sleeper.options(idempotency_key="sws", timeout=60).signal_with_start("poke", 1, 3600)
    deadline = WorkflowRun.objects.get(pk=run.id).deadline
    assert deadline is not None and deadline >= before + dt.timedelta(seconds=60)
    full = continuum.signal_with_start(
        dl.sleeper, "poke", 2, args=[3600], idempotency_key="sws-2", timeout=60
    )
    assert WorkflowRun.objects.get(pk=full.id).deadline is not None


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [0, -1, "1h", dt.timedelta(0), float("nan")])
def test_a_bad_timeout_is_refused_and_nothing_is_stored(bad: Any) -> None:
    with pytest.raises(continuum.InvalidTimeout, match="timeout"):
        dl.sleeper.options(timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        continuum.start(dl.sleeper, args=[1], timeout=bad)
    assert not WorkflowRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_result_raises_workflow_timed_out() -> None:
    run = dl.sleeper.options(timeout=60).start(3600)
    engine = dataclasses.replace(runtime(), eager_steps=0)
    engine.advance_run(run.id)
    make_late(run.id)
    assert engine.sweep()["runs_timed_out"] == 1
    with pytest.raises(continuum.WorkflowTimedOut) as ended:
        run.result(timeout=5)
    assert isinstance(ended.value, continuum.WorkflowFailed)  # existing handlers still catch it
    stored = WorkflowRun.objects.get(pk=run.id)
    assert ended.value.deadline == stored.deadline.isoformat()  # type: ignore[union-attr]
    assert str(stored.deadline.isoformat()) in str(ended.value)  # type: ignore[union-attr]
    assert list(WorkflowRun.objects.timed_out()) == [stored]


@pytest.mark.django_db
def test_the_sweep_finds_late_runs_through_the_deadline_index_alone() -> None:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
        plan = WorkflowRun.objects.past_deadline().order_by("deadline").explain()
        assert "continuum_run_deadline" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_end_each_late_run_exactly_once() -> None:
    runs = [dl.parent.options(timeout=60).start(3600) for _ in range(6)]
    engine = dataclasses.replace(runtime(), eager_steps=0)
    for run in runs:
        engine.advance_run(run.id)
    make_late(*(r.id for r in runs))
    barrier = threading.Barrier(3)
    ended: list[str] = []
    failures: list[BaseException] = []

    def sweep() -> None:
        try:
            barrier.wait(timeout=30)
            ended.extend(OrmJournal().time_out_runs(50).timed_out)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert sorted(ended) == sorted(r.id for r in runs)
    for run in runs:
        events = WorkflowEvent.objects.filter(run_id=run.id)
        assert events.filter(type="run_timed_out").count() == 1
        seqs = list(events.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))
        (child,) = WorkflowRun.objects.filter(parent_run_id=run.id)
        assert child.status == "cancelled"
        assert child.events.filter(type="run_cancelled").count() == 1


def _timed_out_run() -> str:
    run = dl.sleeper.options(timeout=60).start(3600)
    engine = dataclasses.replace(runtime(), eager_steps=0)
    engine.advance_run(run.id)
    make_late(run.id)
    engine.sweep()
    return run.id


@pytest.mark.django_db
def test_the_admin_shows_the_deadline_and_the_timeout(admin_client: Client) -> None:
    late = _timed_out_run()
    live = dl.sleeper.options(timeout=3600).start(3600).id
    html = admin_client.get(reverse("admin:continuum_workflowrun_change", args=[late]))
    text = html.content.decode()
    assert html.status_code == 200
    assert "timed out</span>" in text
    assert 'class="cn-event cn-event-run_timed_out"' in text
    assert "deadline passed" in text  # the timeline's marker
    assert "the run did not finish by its deadline" in text
    deadline = WorkflowRun.objects.get(pk=live).deadline
    page = admin_client.get(reverse("admin:continuum_workflowrun_change", args=[live]))
    assert moment(deadline) in page.content.decode()

    changelist = reverse("admin:continuum_workflowrun_changelist")
    listed = admin_client.get(changelist, {"deadline": "timed_out"}).content.decode()
    assert late[:8] in listed and live[:8] not in listed
    listed = admin_client.get(changelist, {"deadline": "live"}).content.decode()
    assert live[:8] in listed and late[:8] not in listed


@pytest.mark.django_db(transaction=True)
def test_a_timed_out_run_is_not_retried() -> None:
    from continuum_django.operations import RunNotRetryable, retry

    run_id = _timed_out_run()
    with pytest.raises(RunNotRetryable, match="timed out at its deadline"):
        retry(run_id, operator="ops", reason="try again")
    assert WorkflowRun.objects.get(pk=run_id).status == "failed"
