"""Versions on Postgres: worker registration, the deploy gate, the replay check, release."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Max

from continuum_django import versions
from continuum_django.engine.definitions import Registry, WorkflowDefinition, registry
from continuum_django.models import ActivityTask, Timer, WorkflowEvent, WorkflowRun, WorkflowVersion
from tests.contract.conftest import OrmHarness
from tests.testapp import versioned

pytestmark = pytest.mark.django_db


def code_with(*definitions: WorkflowDefinition[..., Any]) -> Registry:
    """A registry standing for the code of a deploy: these workflows, every activity."""
    code = Registry()
    code.activities = registry.activities
    for definition in definitions:
        code.add_workflow(definition)
    return code


def on_version(version: int) -> WorkflowDefinition[..., Any]:
    """The definition of an old ``tests.versioned`` version, as the code that started it had."""
    return WorkflowDefinition(fn=versioned.versioned_v1.fn, name="tests.versioned", version=version)


def parked_run(harness: OrmHarness, version: int = 1) -> str:
    run_id = harness.start(on_version(version) if version != 1 else versioned.versioned_v1, 2)
    harness.runtime.registry = code_with(versioned.versioned_v2)
    harness.drain()
    harness.runtime.registry = registry
    assert WorkflowRun.objects.get(pk=run_id).park_reason == "unknown_version"
    return run_id


def test_a_worker_registers_what_it_carries_and_is_seen_again() -> None:
    assert versions.register_worker("w1@host") == []
    row = WorkflowVersion.objects.get(workflow_name="tests.versioned", version=2)
    assert (row.version_hash, row.worker) == (versioned.versioned_v2.version_hash, "w1@host")
    assert WorkflowVersion.objects.count() == len(registry.workflows)

    versions.register_worker("w2@host", registry=code_with(versioned.versioned_v2))
    again = WorkflowVersion.objects.get(pk=row.pk)
    assert again.worker == "w2@host"
    assert again.first_seen == row.first_seen and again.last_seen > row.last_seen
    assert WorkflowVersion.objects.count() == len(registry.workflows)


def test_registering_releases_only_runs_parked_on_the_versions_it_carries() -> None:
    harness = OrmHarness()
    run_id = parked_run(harness)
    assert versions.register_worker("v2-only", registry=code_with(versioned.versioned_v2)) == []
    assert versions.register_worker("v1", registry=code_with(versioned.versioned_v1)) == [run_id]
    run = WorkflowRun.objects.get(pk=run_id)
    assert run.park_reason == "" and run.status == "suspended"
    assert run.park_detail.startswith("released by worker v1, which has this version")
    harness.sent.runs.clear()
    harness.sent.runs.append(run_id)
    harness.drain()
    assert WorkflowRun.objects.get(pk=run_id).result == ["v1-first:2", "v1-second:2"]


def test_release_by_workflow_and_version() -> None:
    harness = OrmHarness()
    on_v1, on_v7 = parked_run(harness), parked_run(harness, version=7)
    assert versions.release("tests.versioned", 3) == []
    assert versions.release("tests.versioned", 7, by="ops") == [on_v7]
    assert WorkflowRun.objects.get(pk=on_v7).park_detail.startswith("released by ops; before")
    assert versions.release() == [on_v1]
    with pytest.raises(ValueError, match="together with its workflow"):
        versions.release(version=1)


def test_the_deploy_gate_needs_every_version_of_live_runs() -> None:
    harness = OrmHarness()
    done = harness.start(versioned.versioned_v1, 1)
    harness.drain()
    assert WorkflowRun.objects.get(pk=done).status == "completed"  # finished runs need nothing
    harness.start(versioned.versioned_v1, 1)
    harness.sent.runs.clear()  # a pending run, not advanced yet
    parked = parked_run(harness)

    check = versions.check_deploy(code_with(versioned.versioned_v2))
    assert not check.ok
    assert check.to_json()["missing"] == [
        {"workflow": "tests.versioned", "version": 1, "live_runs": 2, "parked_runs": 1}
    ]
    assert versions.check_deploy().ok
    WorkflowRun.objects.exclude(pk=parked).delete()
    assert versions.check_deploy(code_with(versioned.versioned_v2)).to_json()["needed"][0][
        "run_hashes"
    ] == [versioned.versioned_v1.version_hash]


def test_check_command_exit_status_and_json() -> None:
    OrmHarness().start(on_version(7), 1)  # a live run on a version no code here has
    out = StringIO()
    call_command("continuum_versions", "check", "--format", "json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["ok"] is False and document["strict"] is False
    assert document["missing"][0]["version"] == 7
    with pytest.raises(CommandError, match=r"tests\.versioned v7") as failed:
        call_command("continuum_versions", "check", "--strict", stdout=StringIO())
    assert failed.value.returncode == 1
    WorkflowRun.objects.all().delete()
    out = StringIO()
    call_command("continuum_versions", "check", "--strict", stdout=out)
    assert out.getvalue().startswith("OK")


def test_list_shows_code_workers_and_live_runs() -> None:
    versions.register_worker("w1@host")
    OrmHarness().start(on_version(7), 1)
    out = StringIO()
    call_command("continuum_versions", "list", "--format", "json", stdout=out)
    found = {(v["workflow"], v["version"]): v for v in json.loads(out.getvalue())["versions"]}
    v2 = found[("tests.versioned", 2)]
    assert v2["in_code"] and v2["code_hash"] == versioned.versioned_v2.version_hash
    assert v2["builds"][0]["last_worker"] == "w1@host" and v2["live_runs"] == 0
    v7 = found[("tests.versioned", 7)]
    assert (v7["in_code"], v7["live_runs"], v7["builds"][0]["last_seen"]) == (False, 1, None)


def _reserving(ctx: Any, qty: int) -> Any:
    held = (
        ctx.activity(versioned.reserve_all, qty)
        if qty > 0
        else ctx.activity(versioned.backorder, qty)
    )
    return [held, ctx.wait_signal("ship")]


def _notifying(ctx: Any, qty: int) -> Any:
    held = (
        ctx.activity(versioned.reserve, qty) if qty > 0 else ctx.activity(versioned.backorder, qty)
    )
    return [held, ctx.wait_signal("ship"), ctx.activity(versioned.notify, qty)]


def evolving_runs() -> dict[int, str]:
    """Live runs of tests.evolving: waiting for "ship" (qty 1, 2, -1), and one never advanced."""
    harness = OrmHarness()
    runs = {qty: harness.start(versioned.evolving, qty) for qty in (1, 2, -1)}
    done = harness.start(versioned.evolving, 5)
    harness.drain()
    harness.sent.send(harness.journal.deliver_signal(done, "ship", "now", None))
    harness.drain()
    runs[0] = harness.start(versioned.evolving, 0)  # its first advance never happens
    assert WorkflowRun.objects.get(pk=done).status == "completed"
    return runs


def snapshot() -> list[Any]:
    return [
        list(WorkflowRun.objects.order_by("id").values()),
        WorkflowEvent.objects.aggregate(Max("id"), Max("seq")),
        list(ActivityTask.objects.order_by("id").values()),
        list(Timer.objects.order_by("id").values()),
    ]


@pytest.mark.parametrize(
    ("change", "drifting"), [(_reserving, {1, 2}), (_notifying, set()), (None, set())]
)
def test_replay_check_reports_exactly_the_runs_that_drift_and_writes_nothing(
    change: Any, drifting: set[int]
) -> None:
    runs = evolving_runs()
    code = code_with(
        WorkflowDefinition(fn=change, name="tests.evolving", version=1)
        if change
        else versioned.evolving
    )
    before = snapshot()
    report = versions.replay_check(registry=code)
    assert snapshot() == before
    assert report.checked == 4
    assert {v.run_id for v in report.drifted} == {runs[q] for q in drifting}
    for verdict in report.drifted:
        assert verdict.first_difference == {
            "position": 0,
            "recorded": "0:activity:tests.testapp.versioned.reserve",
            "issued": "0:activity:tests.testapp.versioned.reserve_all",
            "seq": 2,
        }
    assert report.ok is not drifting


def test_replay_check_skips_versions_the_code_lacks_and_honours_filters() -> None:
    evolving_runs()
    OrmHarness().start(on_version(7), 1)
    report = versions.replay_check(registry=code_with(versioned.evolving))
    assert report.checked == 4
    assert [(s["workflow"], s["version"]) for s in report.skipped] == [("tests.versioned", 7)]
    assert versions.replay_check("tests.evolving", 2, registry=registry).checked == 2
    assert versions.replay_check("tests.versioned", registry=registry).skipped


def test_release_command_makes_parked_runs_claimable_again() -> None:
    harness = OrmHarness()
    run_id = parked_run(harness)
    assert harness.journal.claim_run(run_id, "w", 30) is None
    out = StringIO()
    call_command(
        "continuum_versions",
        "release",
        *("--workflow", "tests.versioned", "--version", "1", "--format", "json"),
        stdout=out,
    )
    assert json.loads(out.getvalue()) == {"released": [run_id]}
    assert WorkflowRun.objects.get(pk=run_id).park_detail.startswith(
        "released by continuum_versions release;"
    )
    assert harness.journal.claim_run(run_id, "w", 30) is not None
