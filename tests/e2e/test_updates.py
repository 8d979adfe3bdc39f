"""Updates answered by real Celery workers over Redis and Postgres, through crashes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import continuum_django as continuum
from continuum_django import UpdateRejected, UpdateTimeout
from continuum_django.models import Signal, WorkflowEvent
from tests.testapp import updates as up

from .helpers import expire_task_leases, outcomes_per_command, wait_for_file, wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


def answers(run_id: str) -> list[tuple[str, str]]:
    rows = WorkflowEvent.objects.filter(run_id=run_id, type__startswith="update_")
    return [(row.type, row.payload["request_id"]) for row in rows.order_by("seq")]


def test_updates_get_their_replies_from_a_real_worker(worker_factory: StartWorker) -> None:
    worker_factory()
    run = up.counter.start(5)
    assert continuum.update(run.id, "add", 2, timeout=60, request_id="a") == 2
    with pytest.raises(UpdateRejected, match="'two' is not a whole number"):
        run.update("add", "two", timeout=60, request_id="b")
    with pytest.raises(UpdateRejected, match="must not be negative"):
        run.update("add", -1, timeout=60, request_id="c")  # the validator: nothing stored
    assert run.update("add", 3, timeout=60, request_id="d") == 5
    assert run.update("add", 3, timeout=60, request_id="d") == 5  # a retry: the same answer
    assert run.result(timeout=60) == 5
    assert answers(run.id) == [
        ("update_replied", "a"),
        ("update_rejected", "b"),
        ("update_replied", "d"),
    ]
    assert not Signal.objects.filter(dedupe_key="c").exists()


def test_update_timeout_when_the_workflow_never_answers(worker_factory: StartWorker) -> None:
    worker_factory()
    run = up.unanswered.start()
    began = time.monotonic()
    with pytest.raises(UpdateTimeout, match=r"did not answer update 'ask' .* within 1 seconds"):
        continuum.update(run.id, "ask", "anyone?", timeout=1, request_id="q")
    assert time.monotonic() - began >= 1
    wait_until(
        lambda: Signal.objects.filter(dedupe_key="q", consumed_by__isnull=False).exists(),
        what="the run to take the request",
    )
    run.signal("finish")
    assert run.result(timeout=60) == "anyone?"
    assert answers(run.id) == []


def test_a_reply_survives_a_kill_9_between_journal_and_caller(
    worker_factory: StartWorker, tmp_path: Path
) -> None:
    """The worker journals the reply, then dies (kill -9) in the activity that follows,
    before the caller reads anything: the caller still gets the reply, from the journal,
    and the replay on a second worker does not answer the request again."""
    first = worker_factory("first")
    run = up.reply_then_block.start(str(tmp_path))
    with contextlib.suppress(UpdateTimeout):  # send without waiting for the answer
        continuum.update(run.id, "ask", "ping", timeout=0, request_id="survive")
    wait_for_file(tmp_path / "attempt-1")  # the reply is journaled; the next step blocks
    first.kill()
    assert answers(run.id) == [("update_replied", "survive")]

    # No worker is alive: the answer comes from the journal.
    assert continuum.update(run.id, "ask", "ping", timeout=30, request_id="survive") == {
        "echo": "ping"
    }

    expire_task_leases(run.id)  # the lease would lapse after LEASE_SECONDS; skip the wait
    worker_factory("second", beat=True)
    assert run.result(timeout=60) == {"asked": "ping", "attempt": 2}
    assert answers(run.id) == [("update_replied", "survive")]
    assert set(outcomes_per_command(run.id).values()) == {1}
    assert Signal.objects.filter(run_id=run.id).count() == 1
