"""The sweep at size: every query it sends has an index path (its cost does not grow with
finished runs), and a burst of due timers larger than one sweep is swept without a pause."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from continuum_django.models import ActivityTask, Timer
from continuum_django.sweeper import Sweeper
from continuum_django.worker import runtime
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _finished_run_with_tasks() -> None:
    run = RunFactory(status="completed")
    ActivityTask.objects.bulk_create(
        ActivityTask(
            run=run,
            command_id=f"{i}:activity:a",
            activity="a",
            queue="continuum",
            status="completed",
            next_attempt_at="2000-01-01T00:00Z",
        )
        for i in range(3)
    )


def test_every_sweep_query_has_an_index_path() -> None:
    for _ in range(5):
        _finished_run_with_tasks()
    with CaptureQueriesContext(connection) as sent:
        runtime().sweep()
    selects = [q["sql"] for q in sent.captured_queries if q["sql"].startswith(("SELECT", "WITH"))]
    assert len(selects) >= 4  # timers (a WITH on Postgres), late attempts, lost tasks, lost runs
    for sql in selects:
        with transaction.atomic(), connection.cursor() as cursor:
            # Tiny tables favour a sequential scan; forbid it to see whether an index can
            # serve the query at all (on a large journal the planner prefers the index).
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Seq Scan" not in plan, f"{sql}\n{plan}"


def test_the_late_attempts_query_uses_the_open_tasks_index() -> None:
    _finished_run_with_tasks()
    with CaptureQueriesContext(connection) as sent:
        runtime().journal.expired_activities(500)
    (sql,) = [q["sql"] for q in sent.captured_queries]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "continuum_task_open" in plan, plan


def test_a_burst_larger_than_one_sweep_is_swept_without_waiting_an_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime(), "sweep_limit", 2)
    monkeypatch.setattr(runtime(), "timer_batches", 1)
    for i in range(5):
        Timer.objects.create(
            run=RunFactory(status="suspended"),
            command_id=f"{i}:timer:sleep",
            fire_at="2000-01-01T00:00Z",
        )
    sweeper = Sweeper(3600.0)  # its next interval is an hour away: only the burst sweeps
    assert sweeper.sweep_burst() == 3  # 2 + 2 + 1
    assert not Timer.objects.filter(fired=False).exists()


def test_the_unfiltered_run_list_is_counted_from_statistics_when_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from continuum_django.admin.paging import EstimatedCountPaginator
    from continuum_django.models import WorkflowRun

    for _ in range(3):
        RunFactory(status="completed")
    RunFactory(status="failed")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE continuum_workflowrun")
    monkeypatch.setattr(EstimatedCountPaginator, "exact_below", 2)
    every = EstimatedCountPaginator(WorkflowRun.objects.all(), 50)
    with CaptureQueriesContext(connection) as sent:
        assert every.count == 4  # ANALYZE of a small table counts every row
    assert not any("COUNT(" in q["sql"] for q in sent.captured_queries)
    failed = EstimatedCountPaginator(WorkflowRun.objects.filter(status="failed"), 50)
    assert failed.count == 1  # a filtered list is counted exactly


def test_a_small_run_table_is_counted_exactly() -> None:
    from continuum_django.admin.paging import EstimatedCountPaginator
    from continuum_django.models import WorkflowRun

    RunFactory(status="completed")
    with CaptureQueriesContext(connection) as sent:
        assert EstimatedCountPaginator(WorkflowRun.objects.all(), 50).count == 1
    assert any("COUNT(" in q["sql"] for q in sent.captured_queries)


def test_the_run_list_finds_its_filter_values_without_a_distinct_scan(
    admin_client: Any,
) -> None:
    from django.urls import reverse

    RunFactory(workflow_name="tests.alpha", namespace="north")
    RunFactory(workflow_name="tests.beta", namespace="south")
    RunFactory(workflow_name="tests.alpha", namespace="south")
    with CaptureQueriesContext(connection) as sent:
        html = admin_client.get(reverse("admin:continuum_workflowrun_changelist")).content
    page = html.decode()
    for value in ("tests.alpha", "tests.beta", "north", "south"):
        assert f"={value}" in page  # each value is a filter link
    distinct = [q["sql"] for q in sent.captured_queries if "DISTINCT" in q["sql"]]
    assert not any('"workflow_name"' in sql or '"namespace"' in sql for sql in distinct)


def test_the_run_list_reads_no_column_of_every_run_for_its_filters(admin_client: Any) -> None:
    from django.urls import reverse

    from continuum_django.models import WorkflowVersion

    WorkflowVersion.objects.create(workflow_name="tests.alpha", version=1, version_hash="a")
    WorkflowVersion.objects.create(workflow_name="tests.alpha", version=2, version_hash="b")
    old = RunFactory(workflow_name="tests.alpha", workflow_version=1)
    new = RunFactory(workflow_name="tests.alpha", workflow_version=2)
    url = reverse("admin:continuum_workflowrun_changelist")
    with CaptureQueriesContext(connection) as sent:
        page = admin_client.get(url).content.decode()
    run_queries = [q["sql"] for q in sent.captured_queries if "continuum_workflowrun" in q["sql"]]
    # Neither a date drill-down (dates of every run) nor DISTINCT versions of every run.
    assert not [sql for sql in run_queries if "DISTINCT" in sql and "workflow_version" in sql]
    assert not [sql for sql in run_queries if "DATE_TRUNC" in sql.upper()]
    assert "workflow_version=1" in page and "workflow_version=2" in page
    assert "created_at__gte" in page  # the date filter's links

    listed = admin_client.get(url, {"workflow_version": "2"}).content.decode()
    assert str(new.pk) in listed and str(old.pk) not in listed
    refused = admin_client.get(url, {"workflow_version": "two"})
    assert refused.status_code == 302 and "e=1" in refused["Location"]
    dated = admin_client.get(
        url,
        {
            "created_at__gte": "2000-01-01 00:00:00+00:00",
            "created_at__lt": "2100-01-01 00:00:00+00:00",
        },
    )
    assert dated.status_code == 200 and str(new.pk) in dated.content.decode()
