"""Runs on a version a worker lacks: parked, left alone by the sweep, released, then finished."""

from __future__ import annotations

import pytest

from continuum_django.engine.definitions import Registry, registry
from continuum_django.engine.runtime import Runtime
from tests.testapp import versioned

from .conftest import LEASE, Harness


def runtime_with(harness: Harness, worker_id: str, *keys: tuple[str, int]) -> Runtime:
    """A worker whose code holds only the given workflow versions (and every activity)."""
    code = Registry()
    code.activities = registry.activities
    for key in keys:
        code.add_workflow(registry.workflows[key])
    return Runtime(
        journal=harness.journal,
        dispatcher=harness.sent,
        worker_id=worker_id,
        lease_seconds=LEASE,
        registry=code,
    )


V1, V2 = ("tests.versioned", 1), ("tests.versioned", 2)


def park_on_v1(harness: Harness) -> str:
    run_id = harness.start(versioned.versioned_v1, 3)
    only_v2 = runtime_with(harness, "only-v2", V2)
    assert only_v2.advance_run(harness.sent.runs.pop()) == "parked"
    return run_id


def test_a_worker_without_the_version_parks_the_run_and_lets_it_go(harness: Harness) -> None:
    run_id = park_on_v1(harness)
    run = harness.run(run_id)
    assert run["status"] == "suspended"
    assert run["park_reason"] == "unknown_version"
    assert "only-v2 has no tests.versioned version 1 (only version 2)" in run["park_detail"]
    # ... and says where workflows must live for a worker to have them.
    assert "CONTINUUM['WORKFLOW_MODULES']; define the workflow in one" in run["park_detail"]
    assert run["lease_owner"] == "" and run["lease_expires_at"] is None
    assert run["next_wakeup_at"] is not None  # kept, so a release is enough to resume it
    assert harness.types(run_id) == ["run_started"]  # nothing journaled, nothing failed
    assert harness.sent.runs == []  # and not handed back to the queue: no ping-pong


def test_the_sweep_and_new_wakes_leave_a_parked_run_alone(harness: Harness) -> None:
    run_id = park_on_v1(harness)
    harness.backdate_wakeups(3600)
    harness.runtime.sweep()
    assert harness.sent.runs == []
    assert harness.runtime.advance_run(run_id) == "skipped"  # a stray message claims nothing
    harness.journal.deliver_signal(run_id, "unused", None, None)  # a wake while parked
    assert harness.runtime.advance_run(run_id) == "skipped"
    assert harness.run(run_id)["park_reason"] == "unknown_version"


def test_release_wakes_only_runs_parked_on_the_given_versions(harness: Harness) -> None:
    run_id = park_on_v1(harness)
    assert harness.runtime.release_parked([V2, ("tests.other", None)], "by test") == []
    assert harness.run(run_id)["park_reason"] == "unknown_version"

    released = harness.runtime.release_parked([("tests.versioned", None)], "released by w-1")
    assert released == [run_id]
    run = harness.run(run_id)
    assert run["park_reason"] == ""
    assert run["park_detail"].startswith("released by w-1; before that: worker only-v2 has no")
    with_v1 = runtime_with(harness, "with-v1", V1)
    harness.runtime = with_v1
    harness.drain()
    run = harness.run(run_id)
    assert run["status"] == "completed"
    assert run["result"] == ["v1-first:3", "v1-second:3"]
    history = harness.journal.history(run_id)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))


@pytest.mark.parametrize("keys", [None, [V1]])
def test_release_leaves_drift_parked_and_finished_runs_alone(
    harness: Harness, keys: list[tuple[str, int]] | None
) -> None:
    parked = park_on_v1(harness)
    finished = harness.start(versioned.versioned_v1, 1)
    harness.runtime = runtime_with(harness, "with-v1", V1)
    harness.drain()
    assert harness.run(finished)["status"] == "completed"
    claim = harness.journal.claim_run(parked, "someone", LEASE)
    assert claim is None  # parked runs are not claimable
    harness.journal.release_parked(keys, "first release")
    claim = harness.journal.claim_run(parked, "someone", LEASE)
    assert claim is not None
    harness.journal.park_run(claim, "drift", "the code changed")
    assert harness.runtime.release_parked(keys, "second release") == []
    assert harness.run(parked)["park_reason"] == "drift"
