"""Failed work is not final: an operator reopens a failed run at its failed activity."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management import call_command

import continuum_django as continuum
from continuum_django.models import ActivityTask, WorkflowEvent, WorkflowRun
from continuum_django.operations import RunChanged, RunNotRetryable, TaskNotFailed
from tests.contract.conftest import OrmHarness
from tests.testapp import reliability as rl

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def harness() -> Iterator[OrmHarness]:
    rl.FIXED.clear()
    yield OrmHarness()
    rl.FIXED.clear()


def _failed_run(harness: OrmHarness) -> str:
    run_id = harness.start(rl.retry_me)
    harness.drain()
    assert harness.run(run_id)["status"] == "failed"
    return run_id


def _deliver(harness: OrmHarness, run_id: str) -> None:
    """The retry's message went to the broker; the harness delivers it in-process."""
    harness.sent.activities.extend(
        ActivityTask.objects.filter(run_id=run_id, status="scheduled").values_list("id", flat=True)
    )
    harness.drain()


def test_a_failed_run_is_reopened_at_its_failed_activity_and_completes(
    harness: OrmHarness,
) -> None:
    run_id = _failed_run(harness)
    revision = harness.run(run_id)["revision"]
    assert continuum.retry(run_id, operator="ops-ann", reason="provider back", revision=revision)
    row = harness.run(run_id)
    assert (row["status"], row["error"], row["finished_at"]) == ("suspended", None, None)
    reopened = harness.journal.history(run_id)[-1]
    assert reopened.type == "activity_retry_scheduled"
    assert reopened.payload["operator"] == "ops-ann"
    assert reopened.payload["reason"] == "provider back"
    assert reopened.payload["previous_attempts"] == 2
    task = ActivityTask.objects.get(run_id=run_id, activity=rl.flaky_until_fixed.name)
    assert (task.status, task.attempt) == ("scheduled", 0)  # a fresh attempt budget

    rl.FIXED.append(True)
    _deliver(harness, run_id)
    row = harness.run(run_id)
    assert row["status"] == "completed"
    assert row["result"] == ["a", "fixed"]
    types = harness.types(run_id)
    assert types[-4:] == [
        "run_failed", "activity_retry_scheduled", "activity_completed", "run_completed",
    ]  # fmt: skip
    first = ActivityTask.objects.get(run_id=run_id, activity=rl.record.name)
    assert first.attempt == 1  # the activity before the failure did not run again


def test_a_retry_that_fails_again_fails_the_run_again_and_can_be_retried(
    harness: OrmHarness,
) -> None:
    run_id = _failed_run(harness)
    continuum.retry(run_id, operator="ops", reason="try once more")
    _deliver(harness, run_id)
    assert harness.run(run_id)["status"] == "failed"
    failures = [e for e in harness.journal.history(run_id) if e.type == "activity_failed"]
    assert len(failures) == 2
    rl.FIXED.append(True)
    continuum.retry(run_id, operator="ops", reason="fixed now")
    _deliver(harness, run_id)
    assert harness.run(run_id)["result"] == ["a", "fixed"]


def test_a_retry_decided_on_an_older_revision_changes_nothing(harness: OrmHarness) -> None:
    run_id = _failed_run(harness)
    stale = harness.run(run_id)["revision"] - 1
    events = WorkflowEvent.objects.filter(run_id=run_id).count()
    with pytest.raises(RunChanged, match="changed since revision"):
        continuum.retry(run_id, operator="ops", revision=stale)
    assert harness.run(run_id)["status"] == "failed"
    assert WorkflowEvent.objects.filter(run_id=run_id).count() == events


def test_what_cannot_be_retried_says_why(harness: OrmHarness) -> None:
    with pytest.raises(ValueError, match="operator"):
        continuum.retry(_failed_run(harness), operator=" ")
    done = harness.start(rl.two_steps)
    harness.drain()
    with pytest.raises(RunNotRetryable, match="only a failed or parked run"):
        continuum.retry(done, operator="ops")
    handled = harness.start(rl.handles_then_fails)
    harness.drain()
    assert harness.run(handled)["status"] == "failed"
    with pytest.raises(RunNotRetryable, match="handled the failure"):
        continuum.retry(handled, operator="ops")
    with pytest.raises(continuum.RunNotFound):
        continuum.retry("00000000-0000-0000-0000-000000000000", operator="ops")


def test_a_failed_task_can_be_dead_lettered(harness: OrmHarness) -> None:
    run_id = _failed_run(harness)
    task = ActivityTask.objects.get(run_id=run_id, status="failed")
    continuum.dead_letter(task.pk, operator="ops", reason="refunded by hand")
    task.refresh_from_db()
    assert task.status == "dead_lettered"
    assert task.error["dead_lettered"] == {"operator": "ops", "reason": "refunded by hand"}
    assert task.error["type"] == "builtins.ValueError"  # the failure itself is kept
    with pytest.raises(TaskNotFailed):
        continuum.dead_letter(task.pk, operator="ops")


def test_the_command_line_retries_a_failed_run(harness: OrmHarness, capsys) -> None:  # type: ignore[no-untyped-def]
    run_id = _failed_run(harness)
    rl.FIXED.append(True)
    call_command("continuum_runs", "retry", run_id, "--reason", "fixed", "--operator", "cli")
    assert "reopened" in capsys.readouterr().out
    _deliver(harness, run_id)
    assert WorkflowRun.objects.get(pk=run_id).status == "completed"
    reopened = WorkflowEvent.objects.get(run_id=run_id, type="activity_retry_scheduled")
    assert reopened.payload["operator"] == "cli"
