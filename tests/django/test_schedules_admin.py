"""The schedules' admin and ``continuum_schedules``: list with next fire times, the edit
form's errors, pause / resume / trigger behind their own permissions."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from continuum_django import Cron, schedules
from continuum_django.models import Schedule, WorkflowRun
from tests.testapp import scheduled

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:continuum_schedule_changelist")
ADD = reverse("admin:continuum_schedule_add")


@pytest.fixture
def staff(django_user_model: Any) -> Callable[..., Client]:
    def make(*codenames: str) -> Client:
        user = django_user_model.objects.create_user(
            f"staff-{'-'.join(codenames) or 'viewer'}", password="pw", is_staff=True
        )
        perms = Permission.objects.filter(
            content_type__app_label="continuum",
            codename__in=["view_schedule", *codenames],
        )
        user.user_permissions.set(perms)
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def nightly() -> Schedule:
    return scheduled.scheduled_echo.schedule(Cron("30 2 * * *", tz="Europe/Paris", name="nightly"))


def act(client: Client, action: str, row: Schedule) -> Any:
    return client.post(CHANGELIST, {"action": action, "_selected_action": [row.pk]}, follow=True)


def test_the_list_shows_the_spec_and_the_next_fire_times(
    admin_client: Client, nightly: Schedule
) -> None:
    html = admin_client.get(CHANGELIST).content.decode()
    assert "cron 30 2 * * * (Europe/Paris)" in html
    for moment in schedules.next_fire_times(nightly, 5):
        assert moment.strftime("%Y-%m-%d %H:%M:%S") in html
    assert (
        admin_client.get(reverse("admin:continuum_schedule_change", args=[nightly.pk])).status_code
        == 200
    )


def test_pause_resume_and_trigger_need_their_permissions(
    staff: Callable[..., Client], nightly: Schedule
) -> None:
    viewer = staff()
    for action in ("pause_schedules", "resume_schedules", "trigger_schedules"):
        act(viewer, action, nightly)
    assert not Schedule.objects.get(pk=nightly.pk).paused
    assert not WorkflowRun.objects.exists()

    pauser = staff("pause_schedule")
    act(pauser, "pause_schedules", nightly)
    assert Schedule.objects.get(pk=nightly.pk).paused
    act(pauser, "trigger_schedules", nightly)
    assert not WorkflowRun.objects.exists()
    act(pauser, "resume_schedules", nightly)
    assert not Schedule.objects.get(pk=nightly.pk).paused

    act(staff("trigger_schedule"), "trigger_schedules", nightly)
    (run,) = WorkflowRun.objects.all()
    assert run.attributes["schedule"] == "nightly"


def test_the_form_names_a_bad_cron_expression_and_time_zone(admin_client: Client) -> None:
    form = {
        "name": "bad", "workflow_name": "tests.scheduled_echo", "namespace": "default",
        "kind": "cron", "cron": "0 25 * * *", "timezone": "Europe/Atlantis",
        "overlap": "skip", "catchup": "last", "catchup_window": "1 00:00:00",
        "args": "[]", "kwargs": "{}",
    }  # fmt: skip
    html = admin_client.post(ADD, form).content.decode()
    assert "unknown time zone" in html and "Europe/Atlantis" in html
    html = admin_client.post(ADD, {**form, "timezone": "UTC"}).content.decode()
    assert "cron expression &#x27;0 25 * * *&#x27; is not valid" in html
    html = admin_client.post(
        ADD, {**form, "timezone": "UTC", "cron": "0 5 * * *", "workflow_name": "nope"}
    ).content.decode()
    assert "no workflow is registered as &#x27;nope&#x27;" in html
    html = admin_client.post(
        ADD, {**form, "timezone": "UTC", "cron": "0 5 * * *", "args": "[1, 2, 3]"}
    ).content.decode()
    assert "cannot take these arguments" in html
    assert not Schedule.objects.filter(name="bad").exists()

    response = admin_client.post(
        ADD, {**form, "timezone": "UTC", "cron": "0 5 * * *", "kwargs": '{"label": "x"}'}
    )
    assert response.status_code == 302
    row = Schedule.objects.get(name="bad")
    assert row.input == {"args": [], "kwargs": {"label": "x"}}
    assert row.next_fire_at is not None and row.next_fire_at.hour == 5


def test_an_edit_of_the_spec_moves_the_next_slot(admin_client: Client, nightly: Schedule) -> None:
    url = reverse("admin:continuum_schedule_change", args=[nightly.pk])
    form = {
        "name": "nightly", "workflow_name": "tests.scheduled_echo", "namespace": "default",
        "kind": "interval", "cron": "", "timezone": "UTC", "interval": "00:10:00",
        "overlap": "allow", "catchup": "all", "catchup_window": "", "args": "[]", "kwargs": "{}",
    }  # fmt: skip
    assert admin_client.post(url, form).status_code == 302
    row = Schedule.objects.get(pk=nightly.pk)
    assert row.kind == "interval" and row.next_fire_at is not None
    assert row.next_fire_at.minute % 10 == 0 and row.catchup_window is None


def test_the_command_lists_pauses_resumes_and_triggers(nightly: Schedule) -> None:
    out = StringIO()
    call_command("continuum_schedules", "list", "--format", "json", stdout=out)
    listed = {row["name"]: row for row in json.loads(out.getvalue())}
    assert listed["nightly"]["spec"] == "cron 30 2 * * * (Europe/Paris)"
    assert len(listed["nightly"]["next_fire_times"]) == 3
    assert listed["tests.yearly"]["declared"] is True

    call_command("continuum_schedules", "pause", "nightly", stdout=StringIO())
    assert Schedule.objects.get(pk=nightly.pk).paused
    call_command("continuum_schedules", "resume", "nightly", stdout=StringIO())
    assert not Schedule.objects.get(pk=nightly.pk).paused
    out = StringIO()
    call_command("continuum_schedules", "trigger", "nightly", stdout=out)
    assert WorkflowRun.objects.get().id.hex in out.getvalue().replace("-", "")
    with pytest.raises(CommandError, match="no schedule is named 'nope'"):
        call_command("continuum_schedules", "trigger", "nope")
