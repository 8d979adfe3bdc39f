"""Triage in the admin on real Postgres: retry of failed runs (fenced), dead-letter, the
triage columns and filters, and the run page's header for failing work."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db.models import F
from django.db.models.functions import Now
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse

from continuum_django.models import ActivityTask, Timer, WorkflowEvent, WorkflowRun
from tests.contract.conftest import OrmHarness
from tests.factories import RunFactory, TaskFactory
from tests.testapp import reliability as rl

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = reverse("admin:continuum_workflowrun_changelist")
TASKS = reverse("admin:continuum_activitytask_changelist")
ERROR = {"type": "ValueError", "message": "the payment provider is down"}


def page(run_id: Any) -> str:
    return reverse("admin:continuum_workflowrun_change", args=[run_id])


def retry_url(run_id: Any) -> str:
    return reverse("admin:continuum_run_retry", args=[run_id])


def ago(seconds: float) -> Any:
    return Now() - dt.timedelta(seconds=seconds)


@pytest.fixture
def harness() -> Iterator[OrmHarness]:
    rl.FIXED.clear()
    yield OrmHarness()
    rl.FIXED.clear()


def failed_run(harness: OrmHarness) -> WorkflowRun:
    """A run the engine failed at its activity ``flaky_until_fixed`` (2 attempts)."""
    run_id = harness.start(rl.retry_me)
    harness.drain()
    run = WorkflowRun.objects.get(pk=run_id)
    assert run.status == "failed"
    return run


@pytest.fixture
def staff(django_user_model: Any) -> Callable[..., Client]:
    """A logged-in staff client with view permissions plus the given continuum perms."""

    def make(*codenames: str, name: str = "ops-ann") -> Client:
        user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
        views = ["view_workflowrun", "view_activitytask"]
        perms = Permission.objects.filter(
            content_type__app_label="continuum", codename__in=[*views, *codenames]
        )
        user.user_permissions.set(perms)
        client = Client()
        client.force_login(user)
        return client

    return make


def shown(client: Client, query: str = "") -> set[str]:
    """The ids of the runs the list shows for ``query``."""
    response = client.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 200
    return {str(run.pk) for run in response.context["cl"].result_list}


def logged() -> list[tuple[str, str, str]]:
    rows = LogEntry.objects.select_related("user").order_by("id")
    return [(e.object_id, e.user.username, e.change_message) for e in rows]


# -- retry of a failed run ----------------------------------------------------------------


def test_a_failed_run_is_retried_from_its_page_with_a_reason(
    harness: OrmHarness, staff: Callable[..., Client]
) -> None:
    run = failed_run(harness)
    viewer = staff(name="viewer")
    assert retry_url(run.pk) not in viewer.get(page(run.pk)).content.decode()
    assert (
        viewer.post(retry_url(run.pk), {"reason": "x", "revision": run.revision}).status_code == 403
    )

    operator = staff("retry_run")
    assert retry_url(run.pk) in operator.get(page(run.pk)).content.decode()
    form = operator.get(retry_url(run.pk)).content.decode()
    assert f'name="revision" value="{run.revision}"' in form and "Retry failed run" in form
    events = WorkflowEvent.objects.count()
    refused = operator.post(retry_url(run.pk), {"revision": run.revision})
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    assert WorkflowRun.objects.get(pk=run.pk).status == "failed"
    assert WorkflowEvent.objects.count() == events

    done = operator.post(retry_url(run.pk), {"reason": "provider back", "revision": run.revision})
    assert done.status_code == 302
    after = WorkflowRun.objects.get(pk=run.pk)
    assert (after.status, after.error) == ("suspended", None)
    reopened = after.events.order_by("-seq").first()
    assert reopened is not None and reopened.type == "activity_retry_scheduled"
    assert (reopened.payload["operator"], reopened.payload["reason"]) == (
        "ops-ann",
        "provider back",
    )
    assert logged() == [(str(run.pk), "ops-ann", "Retried (reopened). Reason: provider back")]
    task = ActivityTask.objects.get(run=run, activity=rl.flaky_until_fixed.name)
    assert (task.status, task.attempt) == ("scheduled", 0)


def test_a_retry_decided_on_a_stale_page_changes_nothing(
    harness: OrmHarness, staff: Callable[..., Client]
) -> None:
    run = failed_run(harness)
    seen = run.revision
    WorkflowRun.objects.filter(pk=run.pk).update(revision=F("revision") + 1)  # it moved since
    events = WorkflowEvent.objects.count()
    response = staff("retry_run").post(
        retry_url(run.pk), {"reason": "try again", "revision": seen}, follow=True
    )
    assert f"changed since revision {seen}" in response.content.decode()
    assert WorkflowRun.objects.get(pk=run.pk).status == "failed"
    assert WorkflowEvent.objects.count() == events
    assert not LogEntry.objects.exists()


def test_bulk_retry_reopens_failed_runs_unparks_parked_ones_and_is_fenced(
    harness: OrmHarness, staff: Callable[..., Client]
) -> None:
    failed, stale = failed_run(harness), failed_run(harness)
    parked = RunFactory(park_reason="drift", park_detail="drifted")
    healthy = RunFactory(status="suspended")
    operator = staff("retry_run")
    chosen = [failed.pk, stale.pk, parked.pk, healthy.pk]
    action = {"action": "retry_selected", "_selected_action": chosen}
    confirm = operator.post(CHANGELIST, action).content.decode()
    assert "Retry the runs" in confirm and str(healthy.pk) not in confirm
    assert f'name="revision_{failed.pk}" value="{failed.revision}"' in confirm
    revisions = {f"revision_{run.pk}": run.revision for run in [failed, stale, parked]}
    operator.post(CHANGELIST, {**action, **revisions, "apply": "1"})  # no reason: refused
    assert WorkflowRun.objects.get(pk=failed.pk).status == "failed"

    WorkflowRun.objects.filter(pk=stale.pk).update(revision=F("revision") + 1)
    response = operator.post(
        CHANGELIST, {**action, **revisions, "apply": "1", "reason": "outage over"}, follow=True
    )
    assert "1 run(s) unparked, 1 reopened." in response.content.decode()
    assert f"changed since revision {stale.revision}" in response.content.decode()
    statuses = dict(WorkflowRun.objects.values_list("pk", "status"))
    assert (statuses[failed.pk], statuses[stale.pk]) == ("suspended", "failed")
    assert WorkflowRun.objects.get(pk=parked.pk).park_reason == ""
    assert sorted(logged()) == sorted(
        [
            (str(failed.pk), "ops-ann", "Retried (reopened). Reason: outage over"),
            (str(parked.pk), "ops-ann", "Retried (unparked). Reason: outage over"),
        ]
    )


# -- dead-letter ------------------------------------------------------------------------


def test_a_failed_task_is_dead_lettered_from_its_page_with_a_reason(
    staff: Callable[..., Client],
) -> None:
    task = TaskFactory(status="failed", attempt=3, error=ERROR)
    url = reverse("admin:continuum_task_dead_letter", args=[task.pk])
    task_page = reverse("admin:continuum_activitytask_change", args=[task.pk])
    viewer = staff(name="viewer")
    assert url not in viewer.get(task_page).content.decode()
    assert viewer.post(url, {"reason": "x"}).status_code == 403

    operator = staff("retry_run")
    assert url in operator.get(task_page).content.decode()
    assert url in operator.get(page(task.run_id)).content.decode()  # its row on the run page
    assert url not in viewer.get(page(task.run_id)).content.decode()
    refused = operator.post(url, {"reason": ""})
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    assert ActivityTask.objects.get(pk=task.pk).status == "failed"
    assert operator.post(url, {"reason": "refunded by hand"}).status_code == 302
    task.refresh_from_db()
    assert task.status == "dead_lettered"
    assert task.error["dead_lettered"] == {"operator": "ops-ann", "reason": "refunded by hand"}
    assert logged() == [(str(task.pk), "ops-ann", "Dead-lettered. Reason: refunded by hand")]
    again = operator.post(url, {"reason": "twice"}, follow=True).content.decode()
    assert "only a failed one can be dead-lettered" in again


def test_bulk_dead_letter_takes_only_failed_tasks(staff: Callable[..., Client]) -> None:
    failed = TaskFactory.create_batch(2, status="failed", error=ERROR)
    open_task = TaskFactory(status="scheduled")
    operator = staff("retry_run")
    action = {
        "action": "dead_letter_selected",
        "_selected_action": [t.pk for t in [*failed, open_task]],
    }
    assert (
        "This field is required" in operator.post(TASKS, {**action, "apply": "1"}).content.decode()
    )
    assert not ActivityTask.objects.filter(status="dead_lettered").exists()
    operator.post(TASKS, {**action, "apply": "1", "reason": "written off"})
    statuses = dict(ActivityTask.objects.values_list("pk", "status"))
    assert [statuses[t.pk] for t in failed] == ["dead_lettered", "dead_lettered"]
    assert statuses[open_task.pk] == "scheduled"
    assert len(logged()) == 2
    assert (
        staff(name="viewer").post(TASKS, {**action, "apply": "1", "reason": "x"}).status_code == 200
    )
    assert ActivityTask.objects.get(pk=open_task.pk).status == "scheduled"


# -- the filters -------------------------------------------------------------------------


@pytest.fixture
def triage_runs() -> dict[str, str]:
    """Runs in the states the filters tell apart (times moved in the database)."""
    runs = {
        "failed": RunFactory(status="failed", error=ERROR),
        "retrying": RunFactory(status="suspended"),  # attempt 1 failed, retry due later
        "second_attempt": RunFactory(status="suspended"),  # attempt 2 under way
        "healthy": RunFactory(status="suspended"),
        "overdue_wakeup": RunFactory(status="suspended"),
        "stalled": RunFactory(status="pending"),
        "late_timer": RunFactory(status="suspended"),
        "parked": RunFactory(park_reason="drift"),
        "completed": RunFactory(status="completed"),
    }
    TaskFactory(run=runs["retrying"], status="scheduled", attempt=1, error=ERROR)
    TaskFactory(run=runs["second_attempt"], status="running", attempt=2)
    TaskFactory(run=runs["healthy"], status="running", attempt=1)
    TaskFactory(run=runs["completed"], status="failed", attempt=3, error=ERROR)
    rows = WorkflowRun.objects
    rows.filter(pk=runs["overdue_wakeup"].pk).update(next_wakeup_at=ago(600))
    rows.filter(pk=runs["parked"].pk).update(next_wakeup_at=ago(600), updated_at=ago(3600))
    rows.filter(pk=runs["stalled"].pk).update(updated_at=ago(3600))
    Timer.objects.create(run=runs["late_timer"], command_id="0:timer:", fire_at=ago(600))
    return {name: str(run.pk) for name, run in runs.items()}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("triage=failing", {"failed", "retrying", "second_attempt"}),
        ("triage=stuck", {"overdue_wakeup", "stalled"}),
        ("triage=overdue", {"overdue_wakeup", "late_timer", "parked"}),
        ("parked=any", {"parked"}),
    ],
)
def test_filters_return_exactly_their_runs(
    admin_client: Client, triage_runs: dict[str, str], query: str, expected: set[str]
) -> None:
    assert shown(admin_client, query) == {triage_runs[name] for name in expected}


# -- columns and the run page's header -----------------------------------------------------


def test_columns_show_the_redacted_error_attempts_and_age(admin_client: Client) -> None:
    secret = {"type": "CardError", "message": "card 4111111111111111 declined " + "x" * 2000}
    run = RunFactory(status="suspended")
    TaskFactory(run=run, status="scheduled", attempt=2, retry={"max_attempts": 5}, error=secret)
    failed = RunFactory(status="failed", error=secret)
    with override_settings(CONTINUUM={"REDACT": "tests.django.redact.everywhere"}):
        html = admin_client.get(CHANGELIST).content.decode()
    assert "4111111111111111" not in html
    assert html.count("CardError: card •••••• declined") == 4  # two rows: text and title
    assert "x" * 1000 not in html and "…" in html
    assert '<td class="field-attempt">2/5</td>' in html
    assert str(failed.pk)[:8] in html
    created = f"{run.created_at:%Y-%m-%d %H:%M:%S} UTC"
    assert f'<span title="{created}">0\xa0minutes</span>' in html


def test_the_run_page_header_shows_the_failing_activity_and_its_next_attempt(
    admin_client: Client,
) -> None:
    run = RunFactory(status="suspended")
    due = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    TaskFactory(
        run=run,
        activity="shop.charge_card",
        status="scheduled",
        attempt=2,
        retry={"max_attempts": 5},
        error=ERROR,
        next_attempt_at=due,
    )
    html = admin_client.get(page(run.pk)).content.decode()
    assert "activity <strong>charge_card</strong> (attempt 2 of 5) failed" in html
    assert "ValueError: the payment provider is down" in html
    assert "next attempt due 2031-01-02 03:04:05 UTC" in html

    failed = RunFactory(status="failed", error=ERROR)
    assert (
        "ValueError</strong>: the payment provider is down"
        in admin_client.get(page(failed.pk)).content.decode()
    )
    healthy = RunFactory(status="suspended")
    TaskFactory(run=healthy, status="running", attempt=1)
    html = admin_client.get(page(healthy.pk)).content.decode()
    assert "failed:" not in html and "UTC" in html  # times with their zone


def test_a_page_of_50_runs_takes_a_bounded_number_of_queries(
    admin_client: Client, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    for run in RunFactory.create_batch(50, status="suspended"):
        TaskFactory(run=run, status="scheduled", attempt=1, error=ERROR)
    admin_client.get(CHANGELIST)  # warm the session and permission caches
    with django_assert_max_num_queries(10):
        response = admin_client.get(CHANGELIST)
    assert len(response.context["cl"].result_list) == 50
    assert response.content.decode().count("ValueError: the payment provider is down") == 100
