"""The admin under attack: hostile stored strings stay escaped, secrets stay redacted on
every page, and query-string lookups cannot read into JSON values."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse
from django.utils import timezone

from continuum_django.models import Signal, Timer, WorkflowEvent, WorkflowRun, WorkflowVersion
from continuum_django.redaction import SECRET_MARK
from tests.factories import RunFactory, TaskFactory

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
SVG = '"><svg onload=alert(1)>'
JS = "javascript:alert(1)"
X = f"{SCRIPT} {SVG} {JS}"  # stored in every field a page shows
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
ESCAPED_SVG = "&lt;svg onload=alert(1)&gt;"
CARD = "4111111111111111"


def url(model: str, view: str = "changelist", *args: Any) -> str:
    return reverse(f"admin:continuum_{model}_{view}", args=args)


def events(run: WorkflowRun, *rows: tuple[str, str, Any]) -> None:
    start = timezone.now() - dt.timedelta(minutes=1)
    WorkflowEvent.objects.bulk_create(
        WorkflowEvent(
            run=run,
            seq=seq,
            type=kind,
            command_id=command,
            payload=payload,
            created_at=start + dt.timedelta(seconds=seq),
        )
        for seq, (kind, command, payload) in enumerate(rows, start=1)
    )
    run.last_seq = len(rows)
    run.save(update_fields=["last_seq"])


def error(text: str) -> dict[str, str]:
    return {"type": text, "message": text, "traceback": f"Traceback:\n  {text}"}


@pytest.fixture
def hostile() -> dict[str, Any]:
    """One run and its rows with ``X`` in every stored field the admin shows."""
    run = RunFactory(
        workflow_name=X,
        park_reason="drift",
        park_detail=X,
        attributes={X: X},
        input={"args": [X], "kwargs": {X: X}},
        result={X: X},
        error=error(X),
    )
    activity = f"1:activity:{X}"
    events(
        run,
        ("run_started", "", {"input": X}),
        ("activity_scheduled", activity, {"activity": X, "args": [X]}),
        ("activity_failed", activity, {"error": error(X)}),
        ("timer_scheduled", f"2:timer:{X}", {"signal": X, "seconds": 5}),
        ("signal_received", f"2:timer:{X}", {"name": X, "payload": X}),
        ("cancel_requested", "", {"reason": X}),
    )
    task = TaskFactory(
        run=run,
        activity=X,
        command_id=activity,
        queue=X,
        args=[X],
        kwargs={X: X},
        result={X: X},
        error=error(X),
        heartbeat_details={X: X},
        heartbeat_at=timezone.now(),
        lease_owner=X,
    )
    timer = Timer.objects.create(run=run, command_id=f"2:timer:{X}", fire_at=timezone.now())
    signal = Signal.objects.create(
        run=run, chain_root_id=run.id, name=X, payload={X: X}, dedupe_key=X
    )
    version = WorkflowVersion.objects.create(
        workflow_name=X, version=1, version_hash="abc", worker=X
    )
    return {"run": run, "task": task, "timer": timer, "signal": signal, "version": version}


def hostile_pages(admin_client: Client, rows: dict[str, Any]) -> dict[str, str]:
    run = rows["run"]
    LogEntry.objects.log_actions(
        user_id=admin_client.session["_auth_user_id"],
        queryset=[run],
        action_flag=CHANGE,
        change_message=X,
    )
    pages = {
        "run list": url("workflowrun"),
        "run list searched": url("workflowrun") + "?q=" + X,
        "run page": url("workflowrun", "change", run.pk),
        "run page, odd query": url("workflowrun", "change", run.pk) + f"?events=2&x={X}",
        "run history": url("workflowrun", "history", run.pk),
    }
    for action in ["cancel", "signal", "retry", "release"]:
        pages[f"{action} form"] = reverse(f"admin:continuum_run_{action}", args=[run.pk])
    for model in ["activitytask", "timer", "signal", "workflowversion"]:
        key = {"activitytask": "task", "workflowversion": "version"}.get(model, model)
        pages[f"{model} list"] = url(model)
        pages[f"{model} page"] = url(model, "change", rows[key].pk)
    html = {name: admin_client.get(path).content.decode() for name, path in pages.items()}
    signal_form = reverse("admin:continuum_run_signal", args=[run.pk])
    html["signal form, refused"] = admin_client.post(
        signal_form, {"name": X, "payload": X, "reason": X}
    ).content.decode()
    choose = {"action": "cancel_selected", "_selected_action": [run.pk]}
    html["cancel selected"] = admin_client.post(url("workflowrun"), choose).content.decode()
    return html


def test_hostile_strings_stay_escaped_on_every_page(
    admin_client: Client, hostile: dict[str, Any]
) -> None:
    for name, html in hostile_pages(admin_client, hostile).items():
        assert SCRIPT not in html, name
        assert "<svg onload" not in html, name
        assert 'href="javascript:' not in html and "href='javascript:" not in html, name
        assert ESCAPED_SCRIPT in html, name  # the value is shown, escaped
    run_page = admin_client.get(url("workflowrun", "change", hostile["run"].pk)).content.decode()
    assert ESCAPED_SVG in run_page and "cn-timeline" in run_page


# -- redaction reaches every value shown -------------------------------------------


@pytest.fixture
def secret_run() -> dict[str, Any]:
    """A run whose every displayed value carries a card number, under a key or in text."""
    secret = {"card_number": CARD}
    run = RunFactory(
        park_reason="unknown_version",
        park_detail=f"card {CARD} parked",
        attributes=secret,
        input={"args": [secret], "kwargs": {}},
        result=secret,
        error=error(f"card {CARD} declined"),
    )
    events(
        run,
        ("run_started", "", {"input": secret}),
        ("cancel_requested", "", {"reason": f"refund card {CARD}"}),
    )
    task = TaskFactory(
        run=run,
        args=[secret],
        kwargs=secret,
        result=secret,
        error=error(f"card {CARD} declined"),
        heartbeat_details=secret,
        heartbeat_at=timezone.now(),
    )
    signal = Signal.objects.create(run=run, chain_root_id=run.id, name="pay", payload=secret)
    return {"run": run, "task": task, "signal": signal}


def secret_pages(client: Client, rows: dict[str, Any]) -> dict[str, str]:
    run = rows["run"]
    pages = {
        "run list": url("workflowrun"),
        "run page": url("workflowrun", "change", run.pk),
        "run history": url("workflowrun", "history", run.pk),
        "task list": url("activitytask"),
        "task page": url("activitytask", "change", rows["task"].pk),
        "signal list": url("signal"),
        "signal page": url("signal", "change", rows["signal"].pk),
    }
    for action in ["cancel", "signal", "retry", "release"]:
        pages[f"{action} form"] = reverse(f"admin:continuum_run_{action}", args=[run.pk])
    return {name: client.get(path).content.decode() for name, path in pages.items()}


def test_without_a_hook_the_secrets_show(admin_client: Client, secret_run: dict[str, Any]) -> None:
    html = secret_pages(admin_client, secret_run)
    for name in ["run page", "task page", "signal page", "cancel form"]:
        assert CARD in html[name], name  # so the redacted test below can fail


@override_settings(CONTINUUM={"REDACT": "tests.django.redact.everywhere"})
def test_the_hook_redacts_every_value_shown_or_logged(
    admin_client: Client, secret_run: dict[str, Any]
) -> None:
    run = secret_run["run"]
    cancel = reverse("admin:continuum_run_cancel", args=[run.pk])
    assert admin_client.post(cancel, {"reason": f"card {CARD} stolen"}).status_code == 302
    assert LogEntry.objects.get().change_message == (
        f"Cancellation requested. Reason: card {SECRET_MARK} stolen"
    )
    html = secret_pages(admin_client, secret_run)
    for name, text in html.items():
        assert CARD not in text, name
    for name in ["run page", "task page", "signal page", "cancel form", "run history"]:
        assert SECRET_MARK in html[name], name
    run_page = html["run page"]
    assert f"card {SECRET_MARK} declined" in run_page  # the error's message and traceback
    assert f"card {SECRET_MARK} parked" in run_page  # the park detail
    assert f"refund card {SECRET_MARK}" in run_page  # a cancel reason in the history


def test_a_hook_may_replace_an_error_with_a_string(
    admin_client: Client, settings: Any, secret_run: dict[str, Any]
) -> None:
    settings.CONTINUUM = {"REDACT": lambda value: "hidden" if isinstance(value, dict) else value}
    html = admin_client.get(url("workflowrun", "change", secret_run["run"].pk)).content.decode()
    assert f"card {CARD} declined" not in html and "<strong>error</strong>: hidden" in html


# -- lookups and search ------------------------------------------------------------


@pytest.fixture
def viewer(django_user_model: Any) -> Client:
    """A staff user who may only view the continuum tables."""
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="continuum", codename__startswith="view_")
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    ("model", "lookup"),
    [
        ("workflowrun", "result__card_number__startswith=4"),
        ("workflowrun", "attributes__card_number__startswith=4"),
        ("workflowrun", "attributes__contains=4"),
        ("workflowrun", "input__args__0__card_number=4"),
        ("workflowrun", "error__message__contains=4"),
        ("workflowrun", "park_detail__contains=4"),  # text, but no declared filter
        ("activitytask", "result__card_number__startswith=4"),
        ("activitytask", "args__0__card_number__startswith=4"),
        ("activitytask", "kwargs__card_number__startswith=4"),
        ("activitytask", "heartbeat_details__card_number=4"),
        ("activitytask", "error__traceback__contains=4"),
        ("activitytask", "run__attributes__card_number__startswith=4"),
        ("signal", "payload__card_number__startswith=4"),
        ("signal", "run__result__card_number__startswith=4"),
        ("timer", "run__input__args__0=4"),
    ],
)
def test_lookups_into_json_values_are_refused(
    viewer: Client, secret_run: dict[str, Any], model: str, lookup: str
) -> None:
    assert viewer.get(f"{url(model)}?{lookup}").status_code == 400


@pytest.mark.parametrize(
    ("model", "query"),
    [
        ("workflowrun", "status=suspended"),
        ("workflowrun", "status__exact=suspended"),
        ("workflowrun", "parked=unknown_version"),
        ("workflowrun", "workflow_name=tests.three_steps"),
        ("workflowrun", "namespace=default&workflow_version=1"),
        ("workflowrun", "created_at__year=2026&created_at__month=1"),
        ("activitytask", "status=scheduled&kind=activity&queue=continuum"),
        ("activitytask", "activity=tests.testapp.workflows.add_one"),
        ("timer", "fired__exact=0&cancelled__exact=0&fire_at__year=2026"),
        ("signal", "name=pay&received_at__year=2026"),
        ("workflowversion", "workflow_name=tests.three_steps"),
    ],
)
def test_the_declared_filters_keep_working(
    viewer: Client, secret_run: dict[str, Any], model: str, query: str
) -> None:
    assert viewer.get(f"{url(model)}?{query}").status_code == 200


def test_no_search_field_reaches_a_json_value() -> None:
    from continuum_django.admin.actions import touches_json

    registered = [
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label == "continuum"
    ]
    assert len(registered) == 6  # runs, tasks, timers, signals, versions, schedules
    for model, model_admin in registered:
        for field in model_admin.search_fields:
            assert not touches_json(model, field.lstrip("^=@")), (model, field)


def test_search_finds_attributes_only_by_a_key_the_hook_leaves_alone(
    viewer: Client, settings: Any
) -> None:
    run = RunFactory(attributes={"card_number": CARD, "customer": "c-9"})
    found = url("workflowrun", "change", run.pk)

    def hits(term: str) -> bool:
        return found in viewer.get(url("workflowrun"), {"q": term}).content.decode()

    assert not hits(CARD) and not hits(CARD[:4])  # plain search never reads attributes
    assert hits("customer=c-9") and not hits("customer=c-8")
    assert hits(f"card_number={CARD}")  # no hook: nothing is hidden
    settings.CONTINUUM = {"REDACT": "tests.django.redact.secrets"}
    assert hits("customer=c-9")
    assert not hits(f"card_number={CARD}")  # would confirm a hidden value
