"""Invariant 2 under real concurrency: 20 writers append to one run, seqs stay contiguous."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from django.db import connection

from continuum_django.models import ActivityTask, WorkflowEvent
from continuum_django.worker import runtime
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db(transaction=True)


def test_twenty_concurrent_completions_keep_seq_contiguous() -> None:
    run = wf.fan_out.start(20)
    engine = dataclasses.replace(runtime(), eager_steps=0)  # leave every task to the writers
    engine.advance_run(run.id)
    task_ids = list(ActivityTask.objects.filter(run_id=run.id).values_list("id", flat=True))
    assert len(task_ids) == 20

    barrier = threading.Barrier(20)
    failures: list[BaseException] = []

    def complete(task_id: int) -> None:
        try:
            claim = engine.journal.claim_activity(task_id, f"writer-{task_id}", 30)
            assert claim is not None
            barrier.wait(timeout=30)
            engine.journal.finish_activity(claim, result=task_id)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=complete, args=(t,)) for t in task_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures

    seqs = list(WorkflowEvent.objects.filter(run_id=run.id).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    completed = WorkflowEvent.objects.filter(run_id=run.id, type="activity_completed")
    assert completed.count() == 20
    assert len(set(completed.values_list("command_id", flat=True))) == 20
    engine.advance_run(run.id)
    assert run.result(timeout=5) == sorted(task_ids)
