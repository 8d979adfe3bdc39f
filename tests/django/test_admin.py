"""The admin on real Postgres: list, filters, search, run page, permission-guarded actions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse
from django.utils import timezone

import continuum_django as continuum
from continuum_django.models import Signal, WorkflowEvent, WorkflowRun
from continuum_django.worker import runtime
from tests.factories import RunFactory, TaskFactory, long_history
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:continuum_workflowrun_changelist")


def page(run_id: Any) -> str:
    return reverse("admin:continuum_workflowrun_change", args=[run_id])


def drive(run: continuum.RunHandle, activities: bool = True) -> None:
    """Advance the run in this process until it waits (no worker: these tests read pages)."""
    engine = runtime()
    for _ in range(20):
        engine.advance_run(run.id)
        tasks = list(run.get().activity_tasks.filter(status="scheduled"))
        if not activities or not tasks:
            return
        for task in tasks:
            engine.execute_activity(task.id)


@pytest.fixture
def runs_in_every_state() -> dict[str, str]:
    """One run per status (and per park reason), made by the engine where it can."""
    runs: dict[str, str] = {}
    runs["pending"] = continuum.start(wf.three_steps, args=[1], attributes={"customer": "zz-9"}).id
    done = wf.three_steps.start(2)
    drive(done)
    runs["completed"] = done.id
    failed = wf.direct_call_workflow.start()
    drive(failed)
    runs["failed"] = failed.id
    waiting = wf.waiter.start(3600)
    drive(waiting)
    runs["suspended"] = waiting.id
    cancelled = wf.sleeper.start(3600)
    drive(cancelled)
    cancelled.cancel(reason="no longer needed")
    drive(cancelled)
    runs["cancelled"] = cancelled.id
    running = RunFactory(status="running", lease_owner="host:42", lease_token=3)
    TaskFactory(
        run=running,
        status="running",
        attempt=2,
        heartbeat_details={"done": 7},
        heartbeat_at=timezone.now(),
    )
    runs["running"] = str(running.id)
    runs["continued"] = str(RunFactory(status="continued", workflow_name="tests.collector").id)
    runs["drift"] = str(
        RunFactory(park_reason="drift", park_detail="replay drift at command #0: '0:x'").id
    )
    runs["unknown_version"] = str(RunFactory(park_reason="unknown_version", workflow_version=7).id)
    return runs


def test_changelist_shows_runs_in_every_state(
    admin_client: Client, runs_in_every_state: dict[str, str]
) -> None:
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    for status in ["pending", "completed", "failed", "suspended", "cancelled", "running"]:
        assert f"cn-status-{status}" in html
    assert "parked (drift)" in html and "parked (unknown_version)" in html
    assert "signal go until" in html  # the waiter's wait reason: its signal, with a timeout
    assert "replaying on host:42" in html


@pytest.mark.parametrize(
    ("query", "expected", "absent"),
    [
        ("status=completed", ["completed"], ["pending", "failed"]),
        ("parked=drift", ["drift"], ["unknown_version", "pending"]),
        ("parked=unknown_version", ["unknown_version"], ["drift"]),
        ("workflow_name=tests.waiter", ["suspended"], ["completed"]),
        ("namespace=default", ["pending", "completed"], []),
        ("q=customer=zz-9", ["pending"], ["completed"]),  # an attribute key=value
        ("q=zz-9", [], ["pending"]),  # search never reads into attribute values
    ],
)
def test_filters_and_search(
    admin_client: Client,
    runs_in_every_state: dict[str, str],
    query: str,
    expected: list[str],
    absent: list[str],
) -> None:
    html = admin_client.get(f"{CHANGELIST}?{query}").content.decode()
    for name in expected:
        assert page(runs_in_every_state[name]) in html, name
    for name in absent:
        assert page(runs_in_every_state[name]) not in html, name


def test_search_by_run_id_and_idempotency_key(admin_client: Client) -> None:
    keyed = wf.three_steps.options(idempotency_key="order-77").start(1)
    other = wf.three_steps.start(2)
    by_key = admin_client.get(CHANGELIST, {"q": "order-77"}).content.decode()
    assert page(keyed.id) in by_key and page(other.id) not in by_key
    by_id = admin_client.get(CHANGELIST, {"q": other.id}).content.decode()
    assert page(other.id) in by_id and page(keyed.id) not in by_id
    dated = admin_client.get(CHANGELIST, {"created_at__year": "2000"}).content.decode()
    assert page(keyed.id) not in dated  # the date hierarchy filters too


@pytest.mark.parametrize(
    "state",
    [
        "pending", "completed", "failed", "suspended", "cancelled", "running", "continued",
        "drift", "unknown_version",
    ],
)  # fmt: skip
def test_run_page_renders_in_every_state(
    admin_client: Client, runs_in_every_state: dict[str, str], state: str
) -> None:
    response = admin_client.get(page(runs_in_every_state[state]))
    assert response.status_code == 200
    html = response.content.decode()
    for section in ('id="timeline"', 'id="history"', 'id="activity-tasks"', 'id="signals"'):
        assert section in html


def test_run_page_shows_history_timeline_tasks_and_errors(
    admin_client: Client, runs_in_every_state: dict[str, str]
) -> None:
    html = admin_client.get(page(runs_in_every_state["completed"])).content.decode()
    assert html.count('class="cn-event ') == 8
    assert "<svg" in html and html.count('class="cn-bar cn-activity cn-completed"') == 3
    assert "tests.testapp.workflows.describe" in html
    failed = admin_client.get(page(runs_in_every_state["failed"])).content.decode()
    assert "WorkflowUsageError" in failed and "<summary>traceback</summary>" in failed
    running = admin_client.get(page(runs_in_every_state["running"])).content.decode()
    assert "host:42" in running and "&quot;done&quot;: 7" in running  # heartbeat details
    drift = admin_client.get(page(runs_in_every_state["drift"])).content.decode()
    assert "replay drift at command #0" in drift


def test_payloads_are_escaped_truncated_and_redacted(admin_client: Client) -> None:
    run = continuum.start(
        wf.waiter,
        kwargs={"timeout": None},
        attributes={"note": "<script>alert(1)</script>", "card_number": "4111111111111111"},
    )
    continuum.signal(run.id, "go", {"blob": "x" * 5000})
    with override_settings(CONTINUUM={"REDACT": "tests.django.redact.secrets"}):
        html = admin_client.get(page(run.id)).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "4111111111111111" not in html and "••••••" in html
    assert "x" * 5000 not in html and "more characters)" in html


def test_run_page_with_501_events_shows_a_page_of_200_in_fixed_queries(
    admin_client: Client, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    run = RunFactory(status="suspended")
    long_history(run, 250)
    TaskFactory.create_batch(20, run=run, status="completed", attempt=1)
    admin_client.get(page(run.id))  # warm the session and permission caches
    with django_assert_max_num_queries(16):
        response = admin_client.get(page(run.id))
    html = response.content.decode()
    assert html.count('class="cn-event ') == 200
    assert "History (501 events)" in html and "Rows 1\u2013200 of 501" in html


def test_changelist_takes_a_fixed_number_of_queries(
    admin_client: Client,
    runs_in_every_state: dict[str, str],
    django_assert_max_num_queries: Callable[..., Any],
) -> None:
    RunFactory.create_batch(30)
    with django_assert_max_num_queries(10):
        assert admin_client.get(CHANGELIST).status_code == 200


# -- actions and permissions ------------------------------------------------------


@pytest.fixture
def staff(django_user_model: Any) -> Callable[..., Client]:
    """A logged-in staff client holding view permission plus the given continuum perms."""

    def make(*codenames: str) -> Client:
        user = django_user_model.objects.create_user(
            f"staff-{'-'.join(codenames) or 'viewer'}", password="pw", is_staff=True
        )
        perms = Permission.objects.filter(
            content_type__app_label="continuum",
            codename__in=["view_workflowrun", *codenames],
        )
        user.user_permissions.set(perms)
        client = Client()
        client.force_login(user)
        return client

    return make


def action_url(name: str, run_id: Any) -> str:
    return reverse(f"admin:continuum_run_{name}", args=[run_id])


def test_cancel_needs_its_permission(staff: Callable[..., Client]) -> None:
    run = wf.sleeper.start(3600)
    drive(run)
    viewer = staff()
    assert 'href="' + action_url("cancel", run.id) not in viewer.get(page(run.id)).content.decode()
    assert viewer.post(action_url("cancel", run.id), {"reason": "x"}).status_code == 403
    assert not run.get().cancel_requested

    allowed = staff("cancel_run")
    assert action_url("cancel", run.id) in allowed.get(page(run.id)).content.decode()
    response = allowed.post(action_url("cancel", run.id), {"reason": "customer asked"})
    assert response.status_code == 302
    assert run.get().cancel_requested
    assert run.history()[-1].payload == {"reason": "customer asked"}


def test_signal_needs_its_permission(staff: Callable[..., Client]) -> None:
    run = wf.waiter.start()
    drive(run)
    form = {"name": "go", "payload": '"now"', "dedupe_key": ""}
    assert staff().post(action_url("signal", run.id), form).status_code == 403
    assert not Signal.objects.exists()
    response = staff("signal_run").post(action_url("signal", run.id), form)
    assert response.status_code == 302
    assert list(Signal.objects.values_list("name", "payload")) == [("go", "now")]
    drive(run)
    assert run.result(timeout=0) == "now"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": "go", "payload": "{not json"}, "The payload is not valid JSON"),
        ({"name": "go", "payload": "approved"}, "The payload is not valid JSON"),
        ({"name": "", "payload": "1"}, "This field is required"),
        ({"name": "nope", "payload": "1"}, "The workflow declares no signal &#x27;nope&#x27;"),
        ({"name": "approve", "payload": "[1]"}, "takes a dict, not a list"),
    ],
)
def test_signal_form_rejects_bad_input_and_stores_nothing(
    staff: Callable[..., Client], form: dict[str, str], message: str
) -> None:
    run = wf.reviewed.start() if form["name"] in ("nope", "approve") else wf.waiter.start()
    events = WorkflowEvent.objects.count()
    response = staff("signal_run").post(action_url("signal", run.id), form)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Signal.objects.exists()
    assert WorkflowEvent.objects.count() == events


def test_signal_to_a_finished_run_shows_the_error(staff: Callable[..., Client]) -> None:
    run = wf.three_steps.start(1)
    drive(run)
    response = staff("signal_run").post(action_url("signal", run.id), {"name": "go"})
    assert response.status_code == 200
    assert "is completed; it cannot take signal" in response.content.decode()
    assert not Signal.objects.exists()


def test_retry_needs_its_permission(
    staff: Callable[..., Client], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    run = RunFactory(park_reason="drift", park_detail="drifted")
    assert staff("cancel_run").post(action_url("retry", run.id)).status_code == 403
    run.refresh_from_db()
    assert run.park_reason == "drift"
    with django_capture_on_commit_callbacks() as sent:
        response = staff("retry_run").post(action_url("retry", run.id), {"revision": run.revision})
    assert response.status_code == 302
    run.refresh_from_db()
    assert (run.park_reason, run.park_detail) == ("", "")
    assert run.next_wakeup_at is not None  # durable evidence for the sweep
    assert len(sent) == 1  # advance_run, sent once the transaction commits


def test_release_needs_its_permission(
    staff: Callable[..., Client], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    parked = RunFactory.create_batch(2, park_reason="unknown_version", workflow_version=7)
    other = RunFactory(park_reason="unknown_version", workflow_version=8)
    assert staff("retry_run").post(action_url("release", parked[0].id)).status_code == 403
    assert WorkflowRun.objects.filter(park_reason="unknown_version").count() == 3
    with django_capture_on_commit_callbacks() as sent:
        response = staff("release_run").post(action_url("release", parked[0].id))
    assert response.status_code == 302
    assert set(WorkflowRun.objects.filter(park_reason="").values_list("id", flat=True)) == {
        p.id for p in parked
    }
    other.refresh_from_db()
    assert other.park_reason == "unknown_version"
    assert len(sent) == 1


def test_bulk_actions_follow_their_permissions(staff: Callable[..., Client]) -> None:
    run = wf.sleeper.start(3600)
    drive(run)
    parked = RunFactory(park_reason="drift")
    viewer = staff()
    html = viewer.get(CHANGELIST).content.decode()
    assert "cancel_selected" not in html and "retry_selected" not in html
    data = {"action": "cancel_selected", "_selected_action": [run.id]}
    viewer.post(CHANGELIST, data)
    assert not run.get().cancel_requested

    operator = staff("cancel_run", "retry_run")
    confirm = operator.post(CHANGELIST, data)
    assert confirm.status_code == 200 and "Cancel the runs" in confirm.content.decode()
    operator.post(CHANGELIST, {**data, "apply": "1", "reason": "bulk"})
    assert run.get().cancel_requested
    retry = {"action": "retry_selected", "_selected_action": [parked.id]}
    assert "Retry the runs" in operator.post(CHANGELIST, retry).content.decode()
    operator.post(CHANGELIST, {**retry, "apply": "1", f"revision_{parked.id}": parked.revision})
    parked.refresh_from_db()
    assert parked.park_reason == ""


def test_rows_are_read_only(admin_client: Client, runs_in_every_state: dict[str, str]) -> None:
    run_id = runs_in_every_state["pending"]
    assert admin_client.get(reverse("admin:continuum_workflowrun_add")).status_code == 403
    assert admin_client.post(page(run_id), {"status": "completed"}).status_code == 403
    delete = reverse("admin:continuum_workflowrun_delete", args=[run_id])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert WorkflowRun.objects.get(pk=run_id).status == "pending"
    for model in ["activitytask", "timer", "signal", "workflowversion"]:
        listing = admin_client.get(reverse(f"admin:continuum_{model}_changelist"))
        assert listing.status_code == 200, model
        assert admin_client.get(reverse(f"admin:continuum_{model}_add")).status_code == 403


# -- hygiene: bad ids, the admin log, bounded pages --------------------------------


@pytest.mark.parametrize("action", ["cancel", "signal", "retry", "release"])
@pytest.mark.parametrize("run_id", ["not-a-uuid", "1", "00000000-0000-0000-0000-000000000000"])
def test_action_urls_answer_404_for_malformed_or_unknown_ids(
    admin_client: Client, action: str, run_id: str
) -> None:
    url = reverse("admin:continuum_workflowrun_changelist") + f"{run_id}/{action}/"
    assert admin_client.get(url).status_code == 404
    assert admin_client.post(url, {"reason": "x", "name": "go"}).status_code == 404


@pytest.mark.parametrize(
    ("model", "action"),
    [
        ("workflowrun", "cancel_selected"),
        ("workflowrun", "retry_selected"),
        ("workflowrun", "release_selected_versions"),
        ("workflowversion", "release_runs"),
    ],
)
def test_bulk_actions_answer_404_for_malformed_ids(
    admin_client: Client, model: str, action: str
) -> None:
    run = RunFactory(park_reason="drift")
    selected = {"action": action, "_selected_action": [str(run.pk), "not-an-id"]}
    response = admin_client.post(reverse(f"admin:continuum_{model}_changelist"), selected)
    assert response.status_code == 404
    run.refresh_from_db()
    assert run.park_reason == "drift" and not run.cancel_requested


@pytest.mark.parametrize(
    "model", ["workflowrun", "activitytask", "timer", "signal", "workflowversion"]
)
def test_change_and_history_pages_never_500_on_a_malformed_id(
    admin_client: Client, model: str
) -> None:
    for view in ["change", "history"]:
        url = reverse(f"admin:continuum_{model}_changelist") + f"not-an-id/{view}/"
        assert admin_client.get(url).status_code in (302, 404), (model, view)


def history_messages(client: Client, run_id: Any) -> str:
    response = client.get(reverse("admin:continuum_workflowrun_history", args=[run_id]))
    assert response.status_code == 200
    return response.content.decode()


def test_every_run_page_action_is_logged_with_user_and_reason(
    staff: Callable[..., Client],
) -> None:
    from django.contrib.admin.models import LogEntry

    operator = staff("cancel_run", "signal_run", "retry_run", "release_run")
    waiting = wf.waiter.start()
    drive(waiting)
    form = {"name": "go", "payload": '"now"', "reason": "ticket 12"}
    assert operator.post(action_url("signal", waiting.id), form).status_code == 302
    cancel = {"reason": "customer asked"}
    assert operator.post(action_url("cancel", waiting.id), cancel).status_code == 302
    drifted = RunFactory(park_reason="drift")
    retry = {"reason": "fixed", "revision": drifted.revision}
    assert operator.post(action_url("retry", drifted.id), retry).status_code == 302
    parked = RunFactory(park_reason="unknown_version", workflow_version=7)
    assert operator.post(action_url("release", parked.id), {}).status_code == 302

    entries = {
        (str(e.object_id), e.user.username, e.change_message)
        for e in LogEntry.objects.select_related("user")
    }
    user = "staff-cancel_run-signal_run-retry_run-release_run"
    assert entries == {
        (waiting.id, user, "Sent signal 'go'. Reason: ticket 12"),
        (waiting.id, user, "Cancellation requested. Reason: customer asked"),
        (str(drifted.id), user, "Retried (unparked). Reason: fixed"),
        (str(parked.id), user, "Released from version tests.three_steps v7."),
    }
    html = history_messages(operator, waiting.id)
    assert "Sent signal &#x27;go&#x27;. Reason: ticket 12" in html
    assert "Cancellation requested. Reason: customer asked" in html and user in html


def test_bulk_actions_are_logged_on_each_run(staff: Callable[..., Client]) -> None:
    from django.contrib.admin.models import LogEntry

    operator = staff("cancel_run", "retry_run", "release_run")
    runs = [wf.sleeper.start(3600) for _ in range(2)]
    for run in runs:
        drive(run)
    data = {"action": "cancel_selected", "_selected_action": [r.id for r in runs]}
    operator.post(CHANGELIST, {**data, "apply": "1", "reason": "bulk", "terminate": "on"})
    drifted = RunFactory(park_reason="drift")
    retry = {"action": "retry_selected", "_selected_action": [drifted.id], "apply": "1"}
    operator.post(CHANGELIST, {**retry, f"revision_{drifted.id}": drifted.revision})
    parked = RunFactory(park_reason="unknown_version", workflow_version=7)
    release = {"action": "release_selected_versions", "_selected_action": [parked.id]}
    operator.post(CHANGELIST, release)
    logged = sorted(LogEntry.objects.values_list("object_id", "change_message"))
    assert logged == sorted(
        [(r.id, "Terminated. Reason: bulk") for r in runs]
        + [(str(drifted.id), "Retried (unparked).")]
        + [(str(parked.id), "Released from version tests.three_steps v7.")]
    )


def test_version_list_release_is_logged_on_the_released_runs(admin_client: Client) -> None:
    from django.contrib.admin.models import LogEntry

    from continuum_django.models import WorkflowVersion

    parked = RunFactory(park_reason="unknown_version", workflow_version=3)
    version = WorkflowVersion.objects.create(
        workflow_name="tests.three_steps", version=3, version_hash="abc"
    )
    url = reverse("admin:continuum_workflowversion_changelist")
    admin_client.post(url, {"action": "release_runs", "_selected_action": [version.pk]})
    parked.refresh_from_db()
    assert parked.park_reason == ""
    entry = LogEntry.objects.get()
    assert (entry.object_id, entry.user.username) == (str(parked.id), "admin")


def bulk_events(run: WorkflowRun, count: int) -> None:
    start = timezone.now()
    rows = [
        WorkflowEvent(
            run=run,
            seq=n,
            type="side_effect",
            command_id=f"{n}:side_effect",
            payload={"value": n},
            created_at=start + dt.timedelta(milliseconds=n),
        )
        for n in range(1, count + 1)
    ]
    WorkflowEvent.objects.bulk_create(rows, batch_size=5000)
    run.last_seq = count
    run.save(update_fields=["last_seq"])


def test_a_100k_event_run_page_is_bounded_in_size_and_queries(
    admin_client: Client, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    run = RunFactory(status="suspended")
    bulk_events(run, 100_000)
    admin_client.get(page(run.id))  # warm the session and permission caches
    with django_assert_max_num_queries(16):
        response = admin_client.get(page(run.id))
    html = response.content.decode()
    assert len(response.content) < 400_000
    assert "History (100000 events)" in html
    assert html.count('class="cn-event ') == 200
    assert "Drawn from the first 600 of 100000 events." in html

    last = admin_client.get(page(run.id), {"events": "500"}).content.decode()
    assert ">100000</td>" in last and ">99800</td>" not in last and ">99801</td>" in last
    assert admin_client.get(page(run.id), {"events": "nonsense"}).status_code == 200


def test_run_page_sections_page_through_with_links_that_keep_the_others(
    admin_client: Client,
) -> None:
    run = RunFactory(status="suspended")
    long_history(run, 150)  # 301 events: two pages
    TaskFactory.create_batch(201, run=run, status="completed", attempt=1)
    html = admin_client.get(page(run.id), {"tasks": "2"}).content.decode()
    assert "Activity tasks (201)" in html and "Rows 201\u2013201 of 201" in html
    assert 'href="?tasks=2&amp;events=2#history"' in html  # the tasks page is kept
    second = admin_client.get(page(run.id), {"events": "2"}).content.decode()
    assert second.count('class="cn-event ') == 101 and ">301</td>" in second
