"""Notices are hints: `result()` believes the database, not a NOTIFY payload (real Postgres)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection, connections
from django.test import override_settings

import continuum_django as continuum
from continuum_django import ResultTimeout, SignalRejected, workflow
from continuum_django.engine.local import new_run
from continuum_django.journal.base import RUN_ENDED
from continuum_django.journal.starts import signed_start, verified_start
from continuum_django.models import ActivityTask, Signal, WorkflowRun
from continuum_django.tasks import advance_run
from continuum_django.worker import runtime
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db(transaction=True)


def suspended_on_a_signal() -> continuum.RunHandle:
    run = wf.waiter.start()
    runtime().advance_run(run.id)
    assert run.status() == "suspended"
    return run


def forged_notice(run_id: str) -> str:
    return json.dumps({"chain": run_id, "run": run_id, "status": "completed", "result": "forged"})


def notify(payload: str) -> None:
    """NOTIFY the channel from a connection of its own, as any database role could."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_notify(%s, %s)", [RUN_ENDED, payload])


def after_the_first_read(action: Callable[[], None]) -> Callable[..., Any]:
    """An ``execute_wrapper`` that runs ``action`` once `result()` has listened and read the
    run (so that whatever ``action`` announces reaches its LISTEN)."""
    reads: list[str] = []

    def wrapper(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        answer = execute(sql, *args)
        if sql.startswith("SELECT"):
            reads.append(sql)
            if len(reads) == 1:
                action()
        return answer

    return wrapper


@pytest.fixture
def listener() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as listening:
        listening.execute(f"LISTEN {RUN_ENDED}")
        yield listening


def test_a_forged_notice_of_the_end_is_not_a_result() -> None:
    run = suspended_on_a_signal()
    forge = after_the_first_read(lambda: notify(forged_notice(run.id)))
    with (
        connection.execute_wrapper(forge),
        pytest.raises(ResultTimeout, match="is still suspended"),
    ):
        run.result(timeout=1.5)
    assert run.status() == "suspended"


def test_after_a_forged_notice_result_returns_the_real_result() -> None:
    run = suspended_on_a_signal()

    def forge_then_finish() -> None:
        notify(forged_notice(run.id))

        def finish() -> None:
            continuum.signal(run.id, "go", "real")
            runtime().advance_run(run.id)
            connections.close_all()

        worker = threading.Thread(target=finish)
        worker.start()
        worker.join()

    with connection.execute_wrapper(after_the_first_read(forge_then_finish)):
        assert run.result(timeout=10) == "real"
    assert WorkflowRun.objects.get(pk=run.id).result == "real"


def test_the_notice_of_a_real_end_holds_ids_only(listener: psycopg.Connection[Any]) -> None:
    run = suspended_on_a_signal()
    continuum.cancel(run.id, terminate=True)  # ends through the row-locking path
    ended = wf.three_steps.start(5)
    for _ in range(4):  # the last step ends it in one statement
        runtime().advance_run(ended.id)
        for task in ended.get().activity_tasks.filter(status="scheduled"):
            runtime().execute_activity(task.id)
    assert ended.status() == "completed"
    heard = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=2)]
    assert heard == [{"chain": run.id, "run": run.id}, {"chain": ended.id, "run": ended.id}]


@override_settings(CONTINUUM={"MAX_UNREAD_SIGNALS": 5})
def test_signal_refuses_past_the_mailbox_limit_and_writes_nothing() -> None:
    run = suspended_on_a_signal()
    for n in range(5):
        continuum.signal(run.id, f"other-{n}", {"n": n})
    before = WorkflowRun.objects.values().get(pk=run.id)
    with pytest.raises(SignalRejected, match=r"holds 5 unread signals.*MAX_UNREAD_SIGNALS"):
        continuum.signal(run.id, "go", "too many")
    assert Signal.objects.filter(run_id=run.id).count() == 5
    assert WorkflowRun.objects.values().get(pk=run.id) == before
    # The advance loads the mailbox once, at most the limit's rows.
    claim = runtime().journal.claim_run(run.id, "w", 30.0)
    assert claim is not None and len(claim.mailbox) == 5


SIDE_EFFECTS: list[Any] = []


@workflow(name="tests.hints.effect_first")
def effect_first(ctx: Any, target: str) -> Any:
    return ctx.side_effect(lambda: SIDE_EFFECTS.append(target))


def test_advance_run_replays_only_a_started_the_journal_signed_for_that_run() -> None:
    """A forged or stale message never has workflow code replayed on its input: not even a
    `ctx.side_effect` of the workflow it names runs (the database is read instead)."""
    SIDE_EFFECTS.clear()
    journal = runtime().journal
    run_id, _, dispatch = journal.create_run(new_run(wf.three_steps, [1], {}))
    forged = new_run(effect_first, ["forged"], {}).started_payload()
    other_run, _, _ = journal.create_run(new_run(effect_first, ["other run"], {}))
    tampered = signed_start(run_id, forged)
    last = tampered["signed"][-1]
    tampered["signed"] = tampered["signed"][:-1] + ("A" if last != "A" else "B")
    for message in (forged, tampered, signed_start(other_run, forged), {"signed": 3}):
        advance_run(run_id, message)
    assert SIDE_EFFECTS == []
    tasks = ActivityTask.objects.filter(run_id=run_id).order_by("id")
    assert [t.activity for t in tasks] == [wf.add_one.name, wf.double.name, wf.describe.name]
    stored = WorkflowRun.objects.get(pk=run_id).events.get(seq=1).payload
    assert verified_start(run_id, dispatch.starts[run_id]) == stored  # the real message
