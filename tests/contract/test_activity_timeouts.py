"""Activity timeouts and heartbeats, with deadlines moved in the journal instead of waited for."""

from __future__ import annotations

import pytest

from continuum_django.engine.exceptions import LeaseLost
from tests.testapp import workflows as wf

from .conftest import LEASE, Harness


def start_attempt(harness: Harness, *args: object) -> tuple[str, int]:
    run_id = harness.start(wf.watched, *args)
    harness.runtime.advance_run(harness.sent.runs.pop())
    task_id = harness.sent.activities.pop()
    return run_id, task_id


@pytest.mark.parametrize(
    ("deadline", "message"),
    [
        ("attempt_deadline", "start-to-close timeout"),
        ("heartbeat_deadline", "heartbeat timeout"),
        ("lease_expires_at", "stopped renewing its lease"),
    ],
)
def test_a_timed_out_attempt_is_retried_then_fails(
    harness: Harness, deadline: str, message: str
) -> None:
    run_id, task_id = start_attempt(harness)
    for attempt in (1, 2):
        claim = harness.journal.claim_activity(task_id, "worker-a", LEASE)
        assert claim is not None and claim.attempt == attempt
        harness.pass_task_deadline(run_id, deadline)
        assert harness.runtime.sweep()["attempts_timed_out"] == 1
        with pytest.raises(LeaseLost):  # the timed-out attempt can no longer report
            harness.journal.finish_activity(claim, result=7)
        harness.make_retries_due()
        harness.sent.activities.clear()
    harness.drain()
    result = harness.run(run_id)["result"]
    assert result["attempts"] == 2
    assert message in result["failed"]
    assert harness.types(run_id).count("activity_failed") == 1


def test_schedule_to_close_timeout_fails_without_retry(harness: Harness) -> None:
    run_id, task_id = start_attempt(harness, 600.0)
    claim = harness.journal.claim_activity(task_id, "worker-a", LEASE)
    assert claim is not None
    harness.pass_task_deadline(run_id, "schedule_deadline")
    harness.runtime.sweep()
    harness.drain()
    result = harness.run(run_id)["result"]
    assert result == {
        "failed": "the activity exceeded its schedule-to-close timeout",
        "attempts": 1,
    }


def test_heartbeat_extends_the_heartbeat_deadline(harness: Harness) -> None:
    run_id, task_id = start_attempt(harness)
    claim = harness.journal.claim_activity(task_id, "worker-a", LEASE)
    assert claim is not None
    harness.pass_task_deadline(run_id, "heartbeat_deadline")
    assert not harness.journal.renew_activity(claim, LEASE, {"done": 3}, heartbeat=True)
    assert harness.runtime.sweep()["attempts_timed_out"] == 0
    harness.sent.send(harness.journal.finish_activity(claim, result=7))
    harness.drain()
    assert harness.run(run_id)["result"] == 7


def test_renewal_reports_a_cancel_request(harness: Harness) -> None:
    run_id, task_id = start_attempt(harness)
    claim = harness.journal.claim_activity(task_id, "worker-a", LEASE)
    assert claim is not None
    assert harness.journal.renew_activity(claim, LEASE) is False
    harness.journal.request_cancel(run_id, "stop", terminate=False)
    assert harness.journal.renew_activity(claim, LEASE) is True
