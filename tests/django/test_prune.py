"""Retention on Postgres: `continuum_prune` empties expired runs and nothing else."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from typing import Any

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db.models.functions import Now
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse

import continuum_django as continuum
from continuum_django import tasks
from continuum_django.models import (
    ActivityTask,
    Signal,
    Timer,
    WorkflowEvent,
    WorkflowRun,
    WorkflowVersion,
)
from continuum_django.retention import prune_runs
from tests.contract.conftest import OrmHarness
from tests.factories import EventFactory, RunFactory
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db

OWNED = (WorkflowRun, WorkflowEvent, ActivityTask, Timer, Signal)
MONTH = dt.timedelta(days=30)
OWNED_BY_NAME = {  # the report's names of the rows a run owns
    "signals": Signal,
    "timers": Timer,
    "activity_tasks": ActivityTask,
    "events": WorkflowEvent,
}


def ended_ago(run_ids: list[str], age: dt.timedelta) -> None:
    """Move the end of these runs (those that ended) ``age`` into the past, in the database."""
    WorkflowRun.objects.filter(pk__in=run_ids, finished_at__isnull=False).update(
        finished_at=Now() - age
    )


def tree_ids(root: str) -> list[str]:
    """The run ids of a top-level chain started as ``root``, with all runs below it."""
    ids = {
        str(pk)
        for pk in WorkflowRun.objects.filter(chain_root_id=root).values_list("id", flat=True)
    }
    while True:
        below = {
            str(pk)
            for pk in WorkflowRun.objects.filter(parent_run_id__in=ids).values_list("id", flat=True)
        }
        if below <= ids:
            return sorted(ids)
        ids |= below


def rows() -> dict[str, set[Any]]:
    """The primary keys of every row of the journal's tables."""
    return {model.__name__: set(model.objects.values_list("pk", flat=True)) for model in OWNED}


def rows_of(run_ids: list[str]) -> dict[str, set[Any]]:
    found = {
        "WorkflowRun": set(WorkflowRun.objects.filter(pk__in=run_ids).values_list("pk", flat=True))
    }
    for model in OWNED[1:]:
        found[model.__name__] = set(
            model.objects.filter(run_id__in=run_ids).values_list("pk", flat=True)
        )
    return found


def signal(harness: OrmHarness, run_id: str, name: str, payload: Any) -> None:
    harness.sent.send(harness.journal.deliver_signal(run_id, name, payload, None))
    harness.drain()


@pytest.fixture
def harness() -> OrmHarness:
    return OrmHarness()


def ended_runs(harness: OrmHarness) -> dict[str, str]:
    """One top-level tree per way of ending, each with rows of every kind; by label."""
    started = {
        "completed": harness.start(wf.three_steps, 1),  # events and activity tasks
        "failed": harness.start(wf.child_fails),
        "cancelled": harness.start(wf.sleeper, 3600),  # a timer
        "signalled": harness.start(wf.waiter),  # a signal
        "chain": harness.start(wf.cycles, 1, []),  # continue_as_new, a signal mid-chain
        "children": harness.start(wf.fan_out_children, 2),
        "failed_child": harness.start(wf.parent_of_failure),
    }
    harness.drain()
    harness.sent.send(harness.journal.request_cancel(started["cancelled"], "no", terminate=False))
    signal(harness, started["signalled"], "go", "now")
    signal(harness, started["chain"], "poke", "hey")
    for label, run_id in started.items():
        tip = WorkflowRun.objects.filter(chain_root_id=run_id).exclude(status="continued").get()
        assert tip.status == (label if label in ("failed", "cancelled") else "completed"), label
    return started


def test_expired_trees_are_deleted_whole_and_nothing_else(harness: OrmHarness) -> None:
    expired = ended_runs(harness)
    expired_ids = [run_id for root in expired.values() for run_id in tree_ids(root)]
    assert len(expired_ids) == 7 + 4 + 2 + 1  # the chain's 4 successors, 3 child runs
    ended_ago(expired_ids, MONTH + dt.timedelta(minutes=1))
    owned = rows_of(expired_ids)
    assert all(owned[model.__name__] for model in OWNED)  # rows of every kind go

    recent = harness.start(wf.three_steps, 2)  # ended within its retention
    live = harness.start(wf.waiter)
    live_tip = harness.start(wf.cycles, 1, [])  # its chain waits for "poke" on cycle 3
    harness.drain()
    live_root = RunFactory(status="suspended")
    EventFactory(run=RunFactory(status="completed", parent_run=live_root, finished_at=Now()))
    ended_ago([recent], dt.timedelta(days=29))
    ended_ago(tree_ids(live_tip) + tree_ids(str(live_root.pk)), MONTH * 12)  # their ended runs
    assert WorkflowRun.objects.filter(chain_root_id=live_tip, status="continued").count() == 2
    kept = {name: pks - owned[name] for name, pks in rows().items()}

    report = prune_runs(execute=True)

    assert rows() == kept
    assert report.to_json() == {
        "executed": True,
        "trees": 7,
        "runs": len(expired_ids),
        "kept": 0,
        "rows": {name: len(owned[model.__name__]) for name, model in OWNED_BY_NAME.items()},
        "workflows": {
            "tests.child_fails": {"trees": 1, "runs": 1, "kept": 0},
            "tests.cycles": {"trees": 1, "runs": 5, "kept": 0},
            "tests.fan_out_children": {"trees": 1, "runs": 3, "kept": 0},
            "tests.parent_of_failure": {"trees": 1, "runs": 2, "kept": 0},
            "tests.sleeper": {"trees": 1, "runs": 1, "kept": 0},
            "tests.three_steps": {"trees": 1, "runs": 1, "kept": 0},
            "tests.waiter": {"trees": 1, "runs": 1, "kept": 0},
        },
        "live_trees": 0,
    }
    assert WorkflowRun.objects.get(pk=live).status == "suspended"
    assert prune_runs(execute=True).to_json()["trees"] == 0  # idempotent


def test_an_expired_root_with_a_live_run_below_it_stays() -> None:
    """A parent ends before a child it cancelled finishes its cleanup: the tree waits."""
    root = RunFactory(status="cancelled", finished_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    child = RunFactory(status="suspended", parent_run=root, cancel_requested=True)
    EventFactory(run=root)
    EventFactory(run=child)

    report = prune_runs(execute=True)

    assert report.live_trees == 1 and report.total("trees") == 0
    assert WorkflowRun.objects.filter(pk__in=[root.pk, child.pk]).count() == 2
    WorkflowRun.objects.filter(pk=child.pk).update(status="cancelled", finished_at=Now())
    assert prune_runs(execute=True).total("runs") == 2  # the child's own end does not count
    assert not WorkflowRun.objects.exists()


def test_a_dry_run_deletes_nothing_and_reports_what_execute_deletes(harness: OrmHarness) -> None:
    started = ended_runs(harness)
    ended_ago([i for root in started.values() for i in tree_ids(root)], MONTH * 2)
    before = rows()

    out = StringIO()
    call_command("continuum_prune", "--format", "json", stdout=out)
    dry = json.loads(out.getvalue())

    assert rows() == before
    assert dry["executed"] is False and dry["trees"] == 7
    executed = prune_runs(execute=True, batch_size=3).to_json()
    assert executed == dry | {"executed": True}
    assert not WorkflowRun.objects.exists()


def test_small_batches_delete_every_tree_whole(harness: OrmHarness) -> None:
    roots = [harness.start(wf.fan_out_children, 3) for _ in range(5)]
    harness.drain()
    ended_ago([i for root in roots for i in tree_ids(root)], MONTH * 2)

    report = prune_runs(execute=True, batch_size=2)  # batches of 2, 2 and 1 trees

    assert report.workflows == {"tests.fan_out_children": {"trees": 5, "runs": 20, "kept": 0}}
    assert not WorkflowRun.objects.exists() and not WorkflowEvent.objects.exists()
    with pytest.raises(ValueError, match="batch_size"):
        prune_runs(batch_size=0)
    with pytest.raises(CommandError, match="positive integer"):
        call_command("continuum_prune", "--batch-size", "0")


def test_retention_per_workflow_and_changes_apply_to_ended_runs(harness: OrmHarness) -> None:
    steps, sleeper = harness.start(wf.three_steps, 1), harness.start(wf.sleeper, 60)
    harness.drain()
    harness.sent.send(harness.journal.request_cancel(sleeper, "stop", terminate=False))
    harness.drain()
    ended_ago([steps, sleeper], dt.timedelta(hours=2))

    def prune(retention: Any, **options: Any) -> dict[str, Any]:
        with override_settings(CONTINUUM={"RETENTION": retention}):
            return prune_runs(execute=True, **options).workflows

    assert prune(None) == {}  # keep forever
    assert prune({"default": 3 * 3600, "tests.three_steps": None}) == {}
    assert prune({"tests.sleeper": dt.timedelta(hours=3)}) == {}  # the rest: 30 days
    assert prune(3600, workflow="tests.nothing") == {}
    assert prune({"default": None, "tests.sleeper": 3600}) == {
        "tests.sleeper": {"trees": 1, "runs": 1, "kept": 0}
    }
    assert list(WorkflowRun.objects.values_list("id", flat=True)) == [
        WorkflowRun.objects.get(pk=steps).pk
    ]
    assert prune(0, workflow="tests.three_steps") == {
        "tests.three_steps": {"trees": 1, "runs": 1, "kept": 0}
    }


def test_a_kept_idempotency_key_still_returns_the_run_and_its_outcome(
    harness: OrmHarness, admin_client: Client
) -> None:
    single = harness.start(wf.three_steps, 1, idempotency_key="order-1")
    chain = harness.start(wf.cycles, 1, [], idempotency_key="cycle-1")
    harness.drain()
    signal(harness, chain, "poke", "hey")
    ended_ago(tree_ids(single) + tree_ids(chain), MONTH * 2)
    tip = WorkflowRun.objects.get(chain_root_id=chain, status="completed").pk

    report = prune_runs(execute=True)

    assert report.to_json()["runs"] == 3 and report.to_json()["kept"] == 3  # chain's middles
    assert set(WorkflowRun.objects.values_list("pk", flat=True)) == {
        WorkflowRun.objects.get(pk=single).pk,
        WorkflowRun.objects.get(pk=chain).pk,
        tip,
    }
    assert not WorkflowEvent.objects.exists() and not ActivityTask.objects.exists()
    assert continuum.start(wf.three_steps, [9], idempotency_key="order-1").id == single
    assert continuum.result(single) == {"value": 4, "text": "value is 4"}
    assert continuum.start(wf.cycles, [1, []], idempotency_key="cycle-1").id == chain
    assert continuum.result(chain) == {"cycle": 5, "seen": ["hey"]}
    assert WorkflowRun.objects.get(pk=tip).continued_from_id == WorkflowRun.objects.get(pk=chain).pk
    assert prune_runs(execute=True).total("trees") == 0  # already pruned down to the key
    for run_id in (single, chain, tip):  # operators still see them, without history
        page = reverse("admin:continuum_workflowrun_change", args=[run_id])
        assert admin_client.get(page).status_code == 200

    out = StringIO()
    call_command("continuum_prune", "--execute", "--forget-idempotency-keys", stdout=out)
    assert "Deleted 2 tree(s), 3 run(s)" in out.getvalue()
    assert not WorkflowRun.objects.exists()
    assert continuum.start(wf.three_steps, [9], idempotency_key="order-1").id != single


def test_text_report_and_workflow_filter(harness: OrmHarness) -> None:
    steps, failed = harness.start(wf.three_steps, 1), harness.start(wf.child_fails)
    harness.drain()
    ended_ago([steps, failed], MONTH * 2)

    out = StringIO()
    call_command("continuum_prune", "--workflow", "tests.child_fails", stdout=out)
    assert out.getvalue().splitlines() == [
        "tests.child_fails: would delete 1 tree(s), 1 run(s)",
        "DRY RUN: would delete 1 tree(s), 1 run(s), 0 signals, 0 timers, 0 activity tasks, "
        "2 events",
        "Run with --execute to delete.",
    ]
    call_command("continuum_prune", "--workflow", "tests.child_fails", "--execute", stdout=out)
    assert list(WorkflowRun.objects.values_list("workflow_name", flat=True)) == [
        "tests.three_steps"
    ]


def test_the_prune_task_deletes_expired_runs(harness: OrmHarness, celery_app: Any) -> None:
    assert "continuum.prune" in celery_app.tasks
    steps = harness.start(wf.three_steps, 1, idempotency_key="k")
    harness.drain()
    ended_ago([steps], MONTH * 2)

    assert tasks.prune(batch_size=10)["kept"] == 1
    assert WorkflowRun.objects.filter(pk=steps).exists() and not WorkflowEvent.objects.exists()
    assert tasks.prune(forget_idempotency_keys=True)["runs"] == 1
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ("30d", "CONTINUUM['RETENTION'] is '30d'; use seconds"),
        (-1, "CONTINUUM['RETENTION'] is negative (-1)"),
        (True, "CONTINUUM['RETENTION'] is True"),
        ({"orders.fulfil": "forever"}, "CONTINUUM['RETENTION']['orders.fulfil'] is 'forever'"),
        ({3: 60}, "CONTINUUM['RETENTION'] has the key 3"),
        (float("inf"), "not a usable number of seconds"),
    ],
)
def test_bad_retention_is_a_system_check_error(retention: Any, message: str) -> None:
    with override_settings(CONTINUUM={"RETENTION": retention}):
        errors = [m for m in checks.run_checks(tags=["continuum"]) if m.id == "continuum.E023"]
        assert len(errors) == 1 and message in errors[0].msg
        with pytest.raises(ImproperlyConfigured, match="RETENTION"):
            prune_runs()


@pytest.mark.parametrize(
    "retention", [None, 0, 86400.5, MONTH, {"default": None, "a.b": MONTH, "c": 60}]
)
def test_good_retention_passes_the_check(retention: Any) -> None:
    with override_settings(CONTINUUM={"RETENTION": retention}):
        assert not [m for m in checks.run_checks(tags=["continuum"]) if m.id == "continuum.E023"]


def test_versions_gc_collects_rows_no_worker_carries_and_no_live_run_uses() -> None:
    def version(name: str, days: int) -> WorkflowVersion:
        row = WorkflowVersion.objects.create(
            workflow_name=name, version=1, version_hash=f"h-{name}", worker="w1@host"
        )
        WorkflowVersion.objects.filter(pk=row.pk).update(last_seen=Now() - dt.timedelta(days=days))
        return row

    unused, used, recent = version("old", 3), version("live", 3), version("new", 0)
    RunFactory(workflow_name="live", version_hash="h-live", status="suspended")
    RunFactory(workflow_name="old", version_hash="h-old", status="completed")  # ended: no use

    out = StringIO()
    call_command("continuum_versions", "gc", "--dry-run", "--format", "json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["dry_run"] is True
    assert [(r["workflow_name"], r["version_hash"]) for r in document["collected"]] == [
        ("old", "h-old")
    ]
    assert WorkflowVersion.objects.count() == 3

    out = StringIO()
    call_command("continuum_versions", "gc", "--older-than", "7200", stdout=out)
    assert out.getvalue().startswith("deleted 1 unused version row(s)\n  old v1 (h-old)")
    assert set(WorkflowVersion.objects.values_list("pk", flat=True)) == {used.pk, recent.pk}
    assert unused.pk not in set(WorkflowVersion.objects.values_list("pk", flat=True))
    call_command("continuum_versions", "gc", "--older-than", str(5 * 86400), stdout=StringIO())
    assert WorkflowVersion.objects.count() == 2
