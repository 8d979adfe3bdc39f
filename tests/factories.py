"""factory-boy factories for journal rows the admin tests need in states no test run reaches."""

from __future__ import annotations

import datetime as dt
import uuid

import factory
from django.utils import timezone

from continuum_django.models import ActivityTask, WorkflowEvent, WorkflowRun


class RunFactory(factory.django.DjangoModelFactory[WorkflowRun]):
    class Meta:
        model = WorkflowRun

    id = factory.LazyFunction(uuid.uuid4)
    workflow_name = "tests.three_steps"
    status = "suspended"
    input = factory.LazyFunction(lambda: {"args": [1], "kwargs": {}})
    chain_root_id = factory.SelfAttribute("id")


class EventFactory(factory.django.DjangoModelFactory[WorkflowEvent]):
    class Meta:
        model = WorkflowEvent

    run = factory.SubFactory(RunFactory)
    seq = factory.Sequence(lambda n: n + 1)
    type = "run_started"
    created_at = factory.LazyFunction(timezone.now)


class TaskFactory(factory.django.DjangoModelFactory[ActivityTask]):
    class Meta:
        model = ActivityTask

    run = factory.SubFactory(RunFactory)
    command_id = factory.Sequence(lambda n: f"{n}:activity:add_one")
    activity = "tests.testapp.workflows.add_one"
    queue = "continuum"
    next_attempt_at = factory.LazyFunction(timezone.now)


def long_history(run: WorkflowRun, activities: int) -> None:
    """Give ``run`` a started event and ``activities`` scheduled/completed pairs (bulk)."""
    start = timezone.now() - dt.timedelta(minutes=10)
    rows = [WorkflowEvent(run=run, seq=1, type="run_started", payload={}, created_at=start)]
    for n in range(activities):
        command = f"{n}:activity:tests.testapp.workflows.add_one"
        at = start + dt.timedelta(seconds=n)
        rows.append(
            WorkflowEvent(
                run=run,
                seq=len(rows) + 1,
                type="activity_scheduled",
                command_id=command,
                payload={"activity": "tests.testapp.workflows.add_one", "args": [n], "kwargs": {}},
                created_at=at,
            )
        )
        rows.append(
            WorkflowEvent(
                run=run,
                seq=len(rows) + 1,
                type="activity_completed",
                command_id=command,
                payload={"result": n + 1},
                created_at=at + dt.timedelta(milliseconds=300),
            )
        )
    WorkflowEvent.objects.bulk_create(rows)
    run.last_seq = len(rows)
    run.save(update_fields=["last_seq"])
