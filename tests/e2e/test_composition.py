"""Sagas, child workflows, cascading cancellation, continue_as_new and patched on real workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import continuum_django as continuum
from continuum_django.models import ActivityTask, WorkflowEvent, WorkflowRun
from tests.testapp import workflows as wf

from .helpers import expire_task_leases, outcomes_per_command, wait_for_file, wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


def compensation_args(run_id: str) -> list[list[str]]:
    events = WorkflowEvent.objects.filter(run_id=run_id, type="compensation_scheduled")
    return [e.payload["args"] for e in events.order_by("seq")]


def test_saga_compensates_lifo_on_a_real_worker(worker_factory: StartWorker) -> None:
    worker_factory()
    run = wf.saga.start(["flight", "hotel", "car"])
    assert run.result(timeout=60) == {"status": "rolled back", "failed": []}
    assert compensation_args(run.id) == [["car"], ["hotel"], ["flight"]]


def test_parallel_compensations_run_together(worker_factory: StartWorker) -> None:
    worker_factory()
    run = wf.saga.start(["flight", "hotel", "car"], True)
    assert run.result(timeout=60) == {"status": "rolled back", "failed": []}
    types = [e.type for e in run.history()]
    first = types.index("compensation_scheduled")
    assert types[first : first + 3] == ["compensation_scheduled"] * 3


def test_kill_9_while_compensating_runs_the_rest_once(
    worker_factory: StartWorker, tmp_path: Path
) -> None:
    first = worker_factory("first")
    run = wf.saga_blocking_undo.start(str(tmp_path))
    wait_for_file(tmp_path / "attempt-1")  # the first compensation is running
    first.kill()
    expire_task_leases(run.id)
    worker_factory("second", beat=True)
    assert run.result(timeout=60) == {"failed": []}
    assert compensation_args(run.id) == [[str(tmp_path)], ["b"], ["a"]]
    assert set(outcomes_per_command(run.id).values()) == {1}
    compensations = ActivityTask.objects.filter(run_id=run.id, kind="compensation")
    assert sorted(compensations.values_list("attempt", flat=True)) == [1, 1, 2]


def test_fan_out_of_twenty_children_fans_in_in_order(worker_factory: StartWorker) -> None:
    worker_factory()
    run = wf.fan_out_children.start(20)
    assert run.result(timeout=90) == [n * 2 for n in range(20)]
    children = WorkflowRun.objects.filter(parent_run_id=run.id)
    assert children.count() == 20
    assert set(children.values_list("status", flat=True)) == {"completed"}


def test_failing_child_is_handled_by_the_parent(worker_factory: StartWorker) -> None:
    worker_factory()
    run = wf.parent_of_failure.start()
    assert run.result(timeout=60) == "handled: the child gives up"


def test_cancel_a_three_level_tree_while_work_is_in_flight(worker_factory: StartWorker) -> None:
    worker_factory()
    root = wf.tree_root.start(True)
    mid = wait_until(lambda: WorkflowRun.objects.filter(parent_run_id=root.id).first())
    leaf = wait_until(lambda: WorkflowRun.objects.filter(parent_run_id=mid.id).first())
    wait_until(lambda: ActivityTask.objects.filter(run=mid, status="running").exists())
    wait_until(lambda: leaf.timers.filter(fired=False).exists(), what="the leaf's timer")
    tasks_before = set(ActivityTask.objects.values_list("id", flat=True))

    root.cancel(reason="customer asked")
    with pytest.raises(continuum.WorkflowCancelled):
        root.result(timeout=60)
    for run in (mid, leaf):
        wait_until(lambda r=run: continuum.get_run(r.id).status == "cancelled", what=str(run))
    assert not leaf.timers.filter(fired=True).exists()
    new_tasks = ActivityTask.objects.exclude(id__in=tasks_before)
    assert list(new_tasks.values_list("run_id", "kind", "activity")) == [
        (root.get().id, "compensation", "tests.testapp.workflows.undo")
    ]
    assert compensation_args(root.id) == [["root"]]
    blocked = wait_until(
        lambda: ActivityTask.objects.filter(run=mid).exclude(status="running").first(),
        what="the running activity to stop",
    )
    assert blocked.result == "stopped"  # it saw is_cancelled() and stopped early


def test_continue_as_new_five_cycles_signal_to_the_root(worker_factory: StartWorker) -> None:
    worker_factory()
    root = wf.cycles.start(1, [])
    wait_until(
        lambda: (
            WorkflowRun.objects.filter(chain_root_id=root.id, status="suspended")
            .exclude(id=root.id)
            .exists()
        ),
        what="cycle 3 to wait for its signal",
    )
    root.signal("poke", "from the root id")
    assert continuum.result(root.id, timeout=60) == {"cycle": 5, "seen": ["from the root id"]}
    chain = WorkflowRun.objects.filter(chain_root_id=root.id)
    assert chain.count() == 5
    assert sorted(chain.values_list("status", flat=True)) == ["completed"] + ["continued"] * 4
    assert max(run.events.count() for run in chain) <= 6
    assert continuum.get_run(root.id).status == "continued"  # get_run: exactly that run


def test_patched_code_keeps_old_runs_on_the_old_branch(worker_factory: StartWorker) -> None:
    old = worker_factory("old", env={"TESTAPP_VARIANT": "1"})
    before = continuum.start("tests.patchable")
    wait_until(lambda: before.status() == "suspended", what="the old run to wait")
    old.stop()

    worker_factory("new", env={"TESTAPP_VARIANT": "2"})
    before.signal("go")
    assert before.result(timeout=60) == "a"  # old branch, no drift
    after = continuum.start("tests.patchable")
    wait_until(lambda: after.status() == "suspended", what="the new run to wait")
    after.signal("go")
    assert after.result(timeout=60) == "c"
    assert "patch_marker" in [e.type for e in after.history()]
    assert "patch_marker" not in [e.type for e in before.history()]
