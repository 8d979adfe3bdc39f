"""``continuum_versions`` as a deploy pipeline runs it: a separate process carrying the new code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from continuum_django.models import WorkflowRun
from tests.conftest import REPO_ROOT, _test_database_url
from tests.contract.conftest import OrmHarness
from tests.factories import RunFactory
from tests.testapp import versioned

pytestmark = pytest.mark.django_db(transaction=True)


def versions_command(*args: str, **code: str) -> tuple[int, str, str]:
    """Run the command in a fresh process whose workflow code is chosen by ``code`` (env)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
        **code,
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "continuum_versions", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def test_check_strict_fails_when_this_code_lacks_a_live_runs_version() -> None:
    harness = OrmHarness()
    run_id = harness.start(versioned.versioned_v1, 1)
    harness.drain()  # finished: needs nothing any more
    assert WorkflowRun.objects.get(pk=run_id).status == "completed"
    live = harness.start(versioned.versioned_v1, 2)  # started by the current code, still live

    status, out, err = versions_command(
        "check", "--strict", "--format", "json", TESTAPP_VERSIONS="2"
    )
    assert status == 1, err
    document: dict[str, Any] = json.loads(out)
    assert document["ok"] is False and document["strict"] is True
    assert document["missing"] == [
        {"workflow": "tests.versioned", "version": 1, "live_runs": 1, "parked_runs": 0}
    ]
    assert "tests.versioned v1" in err

    assert versions_command("check", TESTAPP_VERSIONS="2")[0] == 0  # without --strict: a report
    status, out, _ = versions_command("check", "--strict", TESTAPP_VERSIONS="1,2")
    assert status == 0 and "OK: this code has every version" in out
    assert WorkflowRun.objects.get(pk=live).status == "pending"  # checking touched nothing


@pytest.mark.parametrize(
    ("change", "status", "drifting"),
    [("incompatible", 1, {1, 3}), ("compatible", 0, set()), ("", 0, set())],
)
def test_replay_check_reports_the_runs_the_changed_code_would_drift(
    change: str, status: int, drifting: set[int]
) -> None:
    harness = OrmHarness()
    runs = {qty: harness.start(versioned.evolving, qty) for qty in (1, -2, 3)}
    harness.drain()
    before = list(WorkflowRun.objects.order_by("id").values())

    code, out, err = versions_command("replay-check", "--format", "json", TESTAPP_CHANGE=change)
    assert code == status, err
    report = json.loads(out)
    assert report["checked"] == 3 and report["skipped"] == []
    assert {d["run_id"] for d in report["drifted"]} == {runs[q] for q in drifting}
    for drift in report["drifted"]:
        assert drift["first_difference"]["recorded"] == "0:activity:tests.testapp.versioned.reserve"
        assert drift["first_difference"]["issued"].endswith("versioned.reserve_all")
    assert list(WorkflowRun.objects.order_by("id").values()) == before


def test_usage_errors_exit_2() -> None:
    status, _, err = versions_command("release", "--version", "1")
    assert status == 2 and "--version needs --workflow" in err
    status, _, err = versions_command("replay-check", "--limit", "0")
    assert status == 2 and "positive integer" in err
    assert versions_command("no-such-action")[0] == 2


def parked_ids() -> set[str]:
    parked = WorkflowRun.objects.filter(park_reason="unknown_version")
    return {str(run_id) for run_id in parked.values_list("id", flat=True)}


def test_release_dry_run_lists_the_runs_and_writes_nothing() -> None:
    mine = RunFactory.create_batch(
        2, park_reason="unknown_version", workflow_name="tests.a", workflow_version=2
    )
    other = RunFactory(park_reason="unknown_version", workflow_name="tests.b")
    RunFactory(park_reason="drift", workflow_name="tests.a", workflow_version=2)
    before = list(WorkflowRun.objects.order_by("id").values())

    status, out, err = versions_command(
        "release", "--workflow", "tests.a", "--version", "2", "--dry-run", "--format", "json"
    )
    assert status == 0, err
    assert set(json.loads(out)["would_release"]) == {str(r.id) for r in mine}
    status, out, err = versions_command("release", "--dry-run")  # every workflow: no --yes needed
    assert status == 0, err
    assert "would release 3 parked run(s)" in out and str(other.id) in out
    assert list(WorkflowRun.objects.order_by("id").values()) == before


def test_release_of_every_workflow_needs_yes() -> None:
    runs = [RunFactory(park_reason="unknown_version", workflow_name=f"tests.{n}") for n in "ab"]
    status, _, err = versions_command("release")
    assert status == 2 and "--yes" in err and "--dry-run" in err and "--workflow" in err
    assert parked_ids() == {str(r.id) for r in runs}

    status, out, err = versions_command("release", "--workflow", "tests.a")
    assert status == 0 and "released 1 parked run(s)" in out, err
    assert parked_ids() == {str(runs[1].id)}
    status, out, err = versions_command("release", "--yes")
    assert status == 0 and "released 1 parked run(s)" in out, err
    assert parked_ids() == set()
