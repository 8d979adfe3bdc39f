"""Flow control of workflow starts, on real Postgres: the key on the run row, runs over the
limit stored waiting (visible, not advanced), and the slot handed on by the transaction
that ends a run of the key (completed, failed, cancelled, timed out) in priority order."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from continuum_django import FlowControlError, workflow
from continuum_django.client import RunHandle
from continuum_django.engine.runtime import Runtime
from continuum_django.health import health_report
from continuum_django.models import WorkflowRun
from continuum_django.worker import runtime
from tests.e2e.helpers import PAST
from tests.testapp import startflow, workflows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def engine() -> Runtime:
    return dataclasses.replace(runtime(), eager_steps=0)  # every advance made by the test


def _row(run: RunHandle) -> WorkflowRun:
    return WorkflowRun.objects.get(pk=run.id)


def _waiting(run: RunHandle) -> bool:
    row = _row(run)
    return (row.status, row.flow_state, row.next_wakeup_at) == ("pending", "slot", None)


def _started(engine: Runtime, wf: Any, *args: Any, **options: Any) -> RunHandle:
    """Start a run and advance it as far as it goes (a waiting run does not move)."""
    run = wf.options(**options).start(*args) if options else wf.start(*args)
    engine.advance_run(run.id)
    return run


def _end(engine: Runtime, run: RunHandle, how: str = "ok") -> None:
    if how == "cancel":
        run.cancel("enough")
    else:
        run.signal("go", how)
    engine.advance_run(run.id)


def test_the_key_from_an_argument_name_is_on_the_row_and_in_the_history(
    engine: Runtime,
) -> None:
    run = _started(engine, startflow.per_customer, "c-1", 3)
    row = _row(run)
    assert (row.flow, row.flow_key, row.flow_state, row.priority) == (
        {"concurrency": 1}, "c-1", "", 0
    )  # fmt: skip
    started = row.events.get(seq=1).payload
    assert started["flow"] == {"concurrency": 1, "key": "c-1", "priority": 0}
    assert row.status == "suspended"  # admitted and advanced


def test_the_key_from_a_function_of_the_arguments(engine: Runtime) -> None:
    run = _started(engine, startflow.by_region, {"region": "eu", "id": 1})
    assert _row(run).flow_key == "eu"


def test_a_workflow_without_limits_has_none_on_its_row(engine: Runtime) -> None:
    run = _started(engine, workflows.three_steps, 1)
    row = _row(run)
    assert (row.flow, row.flow_key, row.flow_state, row.priority) == (None, "", "", 0)
    assert "flow" not in row.events.get(seq=1).payload


def test_over_the_limit_a_start_is_stored_waiting_while_other_keys_proceed(
    engine: Runtime,
) -> None:
    first = _started(engine, startflow.per_customer, "c-1", 1)
    second = _started(engine, startflow.per_customer, "c-1", 2)
    other = _started(engine, startflow.per_customer, "c-2", 3)
    assert _row(first).status == "suspended" and _row(other).status == "suspended"
    assert _waiting(second)
    assert _row(second).last_seq == 1  # not advanced: nothing but its run_started
    second.signal("go", "ok")  # noted, but it does not wake a waiting run
    assert engine.advance_run(second.id) == "skipped" and _waiting(second)


def test_the_limit_counts_live_runs_per_key(engine: Runtime) -> None:
    eu = [_started(engine, startflow.by_region, {"region": "eu", "id": n}) for n in range(4)]
    us = _started(engine, startflow.by_region, {"region": "us", "id": 9})
    assert [_waiting(run) for run in eu] == [False, False, True, True]
    assert not _waiting(us)
    _end(engine, eu[0])
    assert [_waiting(run) for run in eu[2:]] == [False, True]
    assert _row(eu[2]).next_wakeup_at is not None  # woken: its first advance is due


@pytest.mark.parametrize("how", ["ok", "fail", "cancel"])
def test_a_run_that_ends_hands_its_slot_to_the_next(engine: Runtime, how: str) -> None:
    first = _started(engine, startflow.per_customer, "c-1", 1)
    second = _started(engine, startflow.per_customer, "c-1", 2)
    _end(engine, first, how)
    assert _row(first).status == {"ok": "completed", "fail": "failed", "cancel": "cancelled"}[how]
    assert not _waiting(second)
    engine.advance_run(second.id)
    assert _row(second).status == "suspended"  # advanced, waiting for its signal


def test_a_run_timed_out_hands_its_slot_on(engine: Runtime) -> None:
    first = _started(engine, startflow.per_customer, "c-1", 1, timeout=3600)
    second = _started(engine, startflow.per_customer, "c-1", 2)
    WorkflowRun.objects.filter(pk=first.id).update(deadline=PAST)
    engine.journal.time_out_runs(10)
    assert _row(first).status == "failed" and not _waiting(second)


def test_a_waiting_run_cancelled_ends_without_taking_a_slot(engine: Runtime) -> None:
    first = _started(engine, startflow.per_customer, "c-1", 1)
    second = _started(engine, startflow.per_customer, "c-1", 2)
    third = _started(engine, startflow.per_customer, "c-1", 3)
    _end(engine, second, "cancel")
    assert _row(second).status == "cancelled" and _row(first).status == "suspended"
    assert _waiting(third)
    _end(engine, first)
    assert not _waiting(third)


def test_waiting_runs_are_granted_by_priority_then_age(engine: Runtime) -> None:
    holder = _started(engine, startflow.serial, "holder")
    low = _started(engine, startflow.serial, "low", priority=-1)
    old = _started(engine, startflow.serial, "old")
    high = _started(engine, startflow.serial, "high", priority=5)
    new = _started(engine, startflow.serial, "new")
    order = []
    current = holder
    for _ in range(4):
        _end(engine, current)
        (current,) = [
            r
            for r in (low, old, high, new)
            if _row(r).flow_state == "" and _row(r).status == "pending"
        ]
        order.append(current)
        engine.advance_run(current.id)
    assert order == [high, old, new, low]


def test_a_start_that_outranks_the_waiting_is_still_admitted_only_into_a_free_slot(
    engine: Runtime,
) -> None:
    holder = _started(engine, startflow.serial, "holder")
    urgent = _started(engine, startflow.serial, "urgent", priority=100)
    assert _waiting(urgent) and _row(holder).status == "suspended"


def test_options_override_the_declared_limit_for_one_start(engine: Runtime) -> None:
    _started(engine, startflow.serial, "a")
    wider = _started(engine, startflow.serial, "b", concurrency=2)
    assert not _waiting(wider)
    assert _row(wider).flow == {"concurrency": 2}


def test_a_successor_of_continue_as_new_keeps_the_slot(engine: Runtime) -> None:
    first = _started(engine, startflow.chain, "c-1", 1)
    waiting = _started(engine, startflow.chain, "c-1", 0)
    _end(engine, first)  # continues as new
    successor = WorkflowRun.objects.get(continued_from_id=first.id)
    assert (successor.flow_state, successor.flow_key) == ("", "c-1")
    assert successor.next_wakeup_at is not None and _waiting(waiting)
    engine.advance_run(str(successor.id))
    successor.refresh_from_db()
    assert successor.status == "suspended" and _waiting(waiting)


def test_a_child_is_admitted_like_a_start(engine: Runtime) -> None:
    holder = _started(engine, startflow.per_customer, "c-1", 1)
    parent = _started(engine, startflow.parent, "c-1")
    child = WorkflowRun.objects.get(parent_run_id=parent.id)
    assert (child.flow_state, child.next_wakeup_at) == ("slot", None)
    _end(engine, holder)
    child.refresh_from_db()
    assert child.flow_state == "" and child.next_wakeup_at is not None


def test_the_sweep_grants_a_slot_nobody_handed_on(engine: Runtime) -> None:
    first = _started(engine, startflow.per_customer, "c-1", 1)
    second = _started(engine, startflow.per_customer, "c-1", 2)
    # An end that missed the hand-off (written behind the journal's back).
    WorkflowRun.objects.filter(pk=first.id).update(status="completed")
    assert _waiting(second)
    dispatch = engine.journal.due_runs(10, 0)
    assert (second.id, None) in dispatch.runs and not _waiting(second)


def test_idempotency_keys_keep_their_meaning(engine: Runtime) -> None:
    _started(engine, startflow.per_customer, "c-1", 1)
    once = startflow.per_customer.options(idempotency_key="k").start("c-1", 2)
    again = startflow.per_customer.options(idempotency_key="k").start("c-1", 2)
    assert once == again and _waiting(once)
    assert WorkflowRun.objects.filter(workflow_name="startflow.per_customer").count() == 2


def test_waiting_runs_are_visible_in_health_and_not_stalled(engine: Runtime) -> None:
    _started(engine, startflow.per_customer, "c-1", 1)
    second = _started(engine, startflow.per_customer, "c-1", 2)
    WorkflowRun.objects.filter(pk=second.id).update(updated_at=PAST)
    report = health_report()
    assert report.runs_by_wait.get("slot") == 1
    assert report.stalled_runs.count == 0
    from io import StringIO

    out = StringIO()
    call_command("continuum_health", stdout=out)
    assert "a start slot (flow control)" in out.getvalue()


def test_the_admin_lists_and_filters_waiting_runs(engine: Runtime, admin_client: Any) -> None:
    _started(engine, startflow.per_customer, "c-1", 1)
    _started(engine, startflow.per_customer, "c-1", 2)
    page = admin_client.get("/admin/continuum/workflowrun/?flow_state=slot")
    assert page.status_code == 200
    text = page.content.decode()
    assert "a start slot of c-1 (flow control)" in text
    assert "1 workflow run" in text or "1 result" in text


def test_a_start_without_limits_takes_no_statement_of_flow_control(engine: Runtime) -> None:
    with CaptureQueriesContext(connection) as queries:
        workflows.three_steps.start(1)
    assert len(queries.captured_queries) == 1  # the run and its first event, one INSERT
    with CaptureQueriesContext(connection) as queries:
        startflow.serial.start("limited")
    assert any("pg_advisory_xact_lock" in q["sql"] for q in queries.captured_queries)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"concurrency": 0}, "concurrency of workflow"),
        ({"concurrency": 1, "concurrency_key": "nope"}, "names 'nope'"),
        ({"concurrency_key": "customer"}, "no concurrency"),
        ({"concurrency": 1, "priority": "high"}, "priority of workflow"),
    ],
)
def test_bad_limits_are_refused_at_declaration(options: dict[str, Any], complaint: str) -> None:
    def fn(ctx: Any, customer: str) -> None: ...

    with pytest.raises(FlowControlError, match=complaint):
        workflow(name="startflow.bad", **options)(fn)


def test_bad_limits_are_refused_by_options() -> None:
    with pytest.raises(FlowControlError, match=r"concurrency of workflow 'startflow\.serial'"):
        startflow.serial.options(concurrency=-1)


def test_a_key_that_cannot_be_evaluated_is_refused_at_start() -> None:
    with pytest.raises(FlowControlError, match="could not be evaluated"):
        startflow.by_region.start({"id": 1})
    assert not WorkflowRun.objects.exists()
