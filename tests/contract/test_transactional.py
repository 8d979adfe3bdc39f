"""Transactional activities on both journals: the body runs only while its attempt holds the
lease, its result is journaled once, a failure goes through the retry policy."""

from __future__ import annotations

import uuid

import pytest

from continuum_django.engine.exceptions import LeaseLost
from tests.testapp import txn

from .conftest import LEASE, Harness


def key() -> str:
    return f"k-{uuid.uuid4().hex[:8]}"


def test_a_transactional_activity_completes_once(harness: Harness) -> None:
    k = key()
    run_id = harness.start(txn.counting, k)
    harness.drain()
    assert harness.run(run_id)["result"] == {"count": 1}
    history = harness.journal.history(run_id)
    assert [e.type for e in history] == [
        "run_started", "activity_scheduled", "activity_completed", "run_completed",
    ]  # fmt: skip
    assert history[1].payload["transactional"] is True


def test_a_body_that_raises_is_retried_then_fails(harness: Harness) -> None:
    k = key()
    run_id = harness.start(txn.counting, k, True)
    harness.drain()
    assert txn.tries[k] == 2  # the policy's two attempts
    assert harness.run(run_id)["result"] == {
        "failed": "activity 'tests.txn.count' failed after 2 attempt(s): "
        f"builtins.ValueError: {k} failed"
    }


def test_an_attempt_that_lost_its_lease_does_not_run_its_body(harness: Harness) -> None:
    k = key()
    run_id = harness.start(txn.counting, k)
    harness.runtime.advance_run(harness.sent.runs.pop())
    claim = harness.journal.claim_activity(harness.sent.activities.pop(), "worker-a", LEASE)
    assert claim is not None
    harness.pass_task_deadline(run_id, "attempt_deadline")
    with pytest.raises(LeaseLost):
        harness.journal.finish_in_transaction(claim, lambda: txn.count(k))
    assert k not in txn.tries


def test_the_body_does_not_run_once_the_run_has_ended(harness: Harness) -> None:
    k = key()
    run_id = harness.start(txn.counting, k)
    harness.runtime.advance_run(harness.sent.runs.pop())
    claim = harness.journal.claim_activity(harness.sent.activities.pop(), "worker-a", LEASE)
    assert claim is not None
    harness.journal.request_cancel(run_id, "enough", terminate=True)
    assert harness.journal.finish_in_transaction(claim, lambda: txn.count(k)) is None
    assert k not in txn.tries
    assert harness.run(run_id)["status"] == "cancelled"
    assert harness.types(run_id)[-1] == "run_cancelled"
