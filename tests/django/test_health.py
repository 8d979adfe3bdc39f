"""``continuum_health``, the admin's health page and the sweep record, on real Postgres.

Problems are planted as rows whose times are moved in the database (no waiting)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery, current_app
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db.models.functions import Now
from django.test import Client
from django.urls import reverse

from continuum_django import tasks
from continuum_django.health import Thresholds, health_report, record_sweep
from continuum_django.models import ActivityTask, SweepRecord, Timer, WorkflowRun, WorkflowVersion
from tests.conftest import REPO_ROOT, _test_database_url
from tests.factories import RunFactory, TaskFactory

pytestmark = pytest.mark.django_db

HEALTH = reverse("admin:continuum_health")


def ago(seconds: float) -> Any:
    """The database's clock, ``seconds`` ago (negative: ahead)."""
    return Now() - dt.timedelta(seconds=seconds)


def health(*args: str) -> tuple[int, str, str]:
    """The command in this process: (exit status, stdout, the error it exits with)."""
    out = io.StringIO()
    try:
        call_command("continuum_health", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), ""


@pytest.fixture
def fleet() -> None:
    """A sweep and a worker beat just now: only what a test plants can make it degraded."""
    record_sweep({"timers_fired": 0})
    WorkflowVersion.objects.create(
        workflow_name="tests.three_steps", version=1, version_hash="abc", worker="w1@host"
    )


def test_a_clean_database_is_ok_and_strict_exits_zero() -> None:
    status, out, _ = health("--strict")
    assert status == 0
    assert out.startswith("OK at ")
    assert "without a consumer: unknown" in out
    report = health_report()
    assert report.ok and report.reasons == [] and report.live_runs == 0


def test_a_healthy_live_run_is_ok(fleet: None) -> None:
    run = RunFactory(status="suspended")
    Timer.objects.create(run=run, command_id="1:signal:approve", fire_at=ago(-3600))
    RunFactory(status="suspended")  # waiting for a signal without a timeout
    report = health_report()
    assert report.ok, report.reasons
    assert report.runs_by_status == {"suspended": 2}
    assert report.runs_by_wait == {"signal": 1, "event": 1}


def _overdue_run() -> None:
    RunFactory(status="suspended", next_wakeup_at=ago(3600))


def _stalled_run() -> None:
    run = RunFactory(status="pending", next_wakeup_at=ago(0))
    WorkflowRun.objects.filter(pk=run.pk).update(updated_at=ago(3600))


def _overdue_timer() -> None:
    Timer.objects.create(run=RunFactory(), command_id="1:timer:sleep", fire_at=ago(3600))


def _expired_run_lease() -> None:
    RunFactory(status="running", lease_owner="w9", lease_token=4, lease_expires_at=ago(600))


def _expired_task_lease() -> None:
    TaskFactory(status="running", attempt=1, lease_owner="w9", lease_expires_at=ago(600))


def _waiting_activity() -> None:
    task = TaskFactory(status="scheduled", next_attempt_at=ago(30))
    ActivityTask.objects.filter(pk=task.pk).update(updated_at=ago(3600))


def _parked_run() -> None:
    RunFactory(park_reason="drift", park_detail="replay drift at command #0")


def _failing_activity() -> None:
    TaskFactory(
        status="running",
        attempt=2,
        retry={"max_attempts": 3},
        lease_owner="w1",
        lease_expires_at=ago(-30),
        error={"type": "shop.CardDeclined", "message": "card 4242 declined"},
    )


def _silent_sweep() -> None:
    RunFactory()
    SweepRecord.objects.update(last_run_at=ago(3600))


def _silent_workers() -> None:
    RunFactory()
    WorkflowVersion.objects.update(last_seen=ago(3600))


PLANTED = {
    "overdue run": (_overdue_run, "1 run(s) owed an advance for over 60s, unleased"),
    "stalled run": (_stalled_run, "1 run(s) owed work but unchanged for over 300s"),
    "overdue timer": (_overdue_timer, "1 timer(s) due over 60s ago and not fired"),
    "expired run lease": (_expired_run_lease, "1 run lease(s) expired over 60s ago"),
    "expired task lease": (_expired_task_lease, "1 activity lease(s) expired over 60s ago"),
    "activity not picked up": (_waiting_activity, "1 activity task(s) due but untouched"),
    "parked run": (_parked_run, "1 run(s) parked (drift 1)"),
    "failing activity": (
        _failing_activity,
        "1 activity task(s) failing and retrying; latest: tests.testapp.workflows.add_one "
        "attempt 2 of 3: shop.CardDeclined: card 4242 declined",
    ),
    "silent sweep": (_silent_sweep, "the sweep last ran at "),
    "silent workers": (_silent_workers, "no worker seen for over 60s"),
}


@pytest.mark.parametrize("plant", PLANTED.values(), ids=PLANTED.keys())
def test_each_planted_problem_degrades_with_a_reason_naming_it(
    fleet: None, plant: tuple[Callable[[], None], str]
) -> None:
    make, expected = plant
    make()
    report = health_report()
    assert report.status == "degraded"
    assert len(report.reasons) == 1, report.reasons
    assert report.reasons[0].startswith(expected), report.reasons
    status, out, error = health("--strict")
    assert status == 1 and error == "degraded: 1 problem(s)"
    assert out.startswith("DEGRADED at ") and expected in out
    assert health()[0] == 0  # without --strict the report is all


def test_the_sweep_never_run_with_live_runs_is_degraded() -> None:
    RunFactory()
    WorkflowVersion.objects.create(workflow_name="w", version=1, version_hash="h", worker="w1")
    assert health_report().reasons == [
        "the sweep has never run while 1 run(s) are live: is Celery beat running?"
    ]


def test_thresholds_decide_what_is_late(fleet: None) -> None:
    RunFactory(status="suspended", next_wakeup_at=ago(120))
    assert not health_report().ok
    assert health_report(Thresholds(overdue_after=600)).ok
    assert health("--strict", "--overdue-after", "600")[0] == 0
    with pytest.raises(ValueError, match="health threshold stuck_after must be a positive"):
        Thresholds(stuck_after=0)
    with pytest.raises(CommandError, match="--stuck-after: must be a positive number"):
        call_command("continuum_health", "--stuck-after", "-5")


def test_json_report_parses_and_names_every_section(fleet: None) -> None:
    _failing_activity()
    _parked_run()
    status, out, _ = health("--format", "json")
    assert status == 0
    document = json.loads(out)
    assert document["status"] == "degraded" and len(document["reasons"]) == 2
    assert document["runs_by_status"] == {"suspended": 2}
    assert document["runs_by_wait"] == {"activity": 1, "parked": 1}
    assert document["parked_by_reason"] == {"drift": 1}
    failing = document["failing"][0]
    assert (failing["attempt"], failing["max_attempts"], failing["status"]) == (2, 3, "running")
    assert failing["error_type"] == "shop.CardDeclined"
    assert document["failing_activities"]["count"] == 1
    assert document["sweep"]["runs_total"] == 1
    assert document["sweep"]["last_counts"] == {"timers_fired": 0}
    assert document["workers"]["recent"] == ["w1@host"]
    assert document["queues"] == {
        "needed": ["continuum"],
        "without_consumer": None,
        "broker_error": "",
    }
    assert document["thresholds"]["overdue_after"] == 60.0
    assert dt.datetime.fromisoformat(document["checked_at"]).tzinfo is not None


def test_the_report_takes_a_fixed_number_of_queries(
    fleet: None, django_assert_max_num_queries: Any
) -> None:
    for _ in range(20):
        for make, _expected in PLANTED.values():
            make()
    with django_assert_max_num_queries(16):  # 16: with the flow-control count
        report = health_report()
    assert report.overdue_runs.count == 20 and len(report.overdue_runs.samples) == 5
    assert report.failing_activities.count == 20 and len(report.failing) == 10


def test_inspecting_workers_finds_queues_with_no_consumer(fleet: None, broker_url: str) -> None:
    TaskFactory(queue="payments", next_attempt_at=ago(-600))  # nobody consumes it here
    report = health_report(inspect_workers=0.5)
    assert report.workers.inspected == []
    assert report.queues.without_consumer == ["continuum", "payments"]
    assert report.reasons == ["queue(s) with no consumer: continuum, payments"]


def test_a_broker_that_cannot_be_reached_is_reported(fleet: None) -> None:
    previous = current_app._get_current_object()
    down = Celery("down", set_as_current=True)
    nowhere = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    down.conf.update(  # not broker_url: the environment's CELERY_BROKER_URL wins over it
        broker_read_url=nowhere,
        broker_write_url=nowhere,
        broker_transport_options={"max_retries": 1},
    )
    try:
        report = health_report(inspect_workers=0.5)
    finally:
        previous.set_current()
    assert report.workers.inspected is None and report.queues.without_consumer is None
    assert len(report.reasons) == 1
    assert report.reasons[0].startswith("could not ask the workers through the broker: ")
    assert "127.0.0.1:1" in report.queues.broker_error


# -- the sweep's record ---------------------------------------------------------------


def test_the_sweep_task_records_when_it_ran_and_its_counts() -> None:
    assert not SweepRecord.objects.exists()
    counts = tasks.sweep()
    record = SweepRecord.objects.get()
    assert record.last_counts == counts and "timers_fired" in counts
    assert record.runs_total == 1 and record.last_worker
    first = record.last_run_at
    SweepRecord.objects.update(last_run_at=ago(3600))
    tasks.sweep()
    record.refresh_from_db()
    assert record.runs_total == 2 and record.last_run_at >= first
    assert health_report().sweep.runs_total == 2


# -- the admin page ---------------------------------------------------------------------


@pytest.fixture
def login(django_user_model: Any) -> Callable[..., Client]:
    def make(*codenames: str, staff: bool = True) -> Client:
        user = django_user_model.objects.create_user(
            f"u-{'-'.join(codenames)}-{staff}", password="pw", is_staff=staff
        )
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="continuum", codename__in=codenames)
        )
        client = Client()
        client.force_login(user)
        return client

    return make


def test_the_health_page_shows_problems_to_a_view_only_staff_user(
    fleet: None, login: Callable[..., Client]
) -> None:
    _failing_activity()
    _overdue_run()
    viewer = login("view_workflowrun")
    response = viewer.get(HEALTH)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="health-status">degraded</span>' in html
    assert "2 of 3" in html and "card 4242 declined" in html
    assert "owed an advance" in html
    overdue = WorkflowRun.objects.get(next_wakeup_at__isnull=False)
    assert reverse("admin:continuum_workflowrun_change", args=[overdue.pk]) in html
    assert " UTC" in html  # times carry their zone
    changelist = viewer.get(reverse("admin:continuum_workflowrun_changelist"))
    assert HEALTH in changelist.content.decode()


def test_the_health_page_needs_staff_and_the_view_permission(
    login: Callable[..., Client],
) -> None:
    assert login("view_workflowrun", staff=False).get(HEALTH).status_code == 302  # to login
    assert Client().get(HEALTH).status_code == 302
    assert login("view_timer").get(HEALTH).status_code == 403


# -- as a monitor runs it ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_exit_status_from_a_separate_process() -> None:
    def run() -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": _test_database_url(),
        }
        argv = [sys.executable, "-m", "django", "continuum_health", "--strict"]
        return subprocess.run(
            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    clean = run()
    assert clean.returncode == 0, clean.stderr
    _overdue_run()
    stuck = run()
    assert stuck.returncode == 1
    assert "degraded" in stuck.stderr and "owed an advance" in stuck.stdout
