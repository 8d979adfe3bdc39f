"""One harness per journal, so the contract suite runs the same tests on both."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from continuum_django.engine.clock import FakeClock
from continuum_django.engine.definitions import WorkflowDefinition
from continuum_django.engine.journal import Dispatch, Journal
from continuum_django.engine.local import new_run
from continuum_django.engine.memory import MemoryJournal
from continuum_django.engine.runtime import Runtime

LEASE = 30.0


class Collector:
    """A dispatcher that keeps the hints so the harness can deliver them, or lose them."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.activities: list[int] = []

    def send(self, dispatch: Dispatch) -> None:
        self.runs.extend(run_id for run_id, _ in dispatch.runs)
        self.activities.extend(task_id for task_id, _, _ in dispatch.activities)


class Harness:
    """Drives a journal through the runtime; subclasses move time for their journal."""

    journal: Journal

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.sent = Collector()
        self.runtime = self.make_runtime("worker-a")

    def make_runtime(self, worker_id: str, eager_steps: int = 0) -> Runtime:
        """A runtime that sends every hint as a message (tests deliver them one by one),
        or with ``eager_steps`` chains steps in-process as workers do."""
        return Runtime(
            journal=self.journal,
            dispatcher=self.sent,
            worker_id=worker_id,
            lease_seconds=LEASE,
            eager_steps=eager_steps,
        )

    def start(self, workflow: WorkflowDefinition[..., Any], *args: Any, **options: Any) -> str:
        run_id, _, dispatch = self.journal.create_run(new_run(workflow, args, {}, **options))
        self.sent.send(dispatch)
        return run_id

    def drain(self, max_steps: int = 500) -> None:
        """Deliver every hint until none is left; retries waiting on a delay are made due."""
        for _ in range(max_steps):
            if self.sent.runs:
                self.runtime.advance_run(self.sent.runs.pop(0))
            elif self.sent.activities:
                self.runtime.execute_activity(self.sent.activities.pop(0))
            elif self.make_retries_due():
                continue
            else:
                return
        raise AssertionError("the harness did not settle")

    def types(self, run_id: str) -> list[str]:
        return [str(e.type) for e in self.journal.history(run_id)]

    # Subclasses: the run's row as a dict, and ways to move time for one row.
    def run(self, run_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def expire_run_lease(self, run_id: str) -> None:
        raise NotImplementedError

    def expire_task_leases(self, run_id: str) -> None:
        raise NotImplementedError

    def pass_task_deadline(self, run_id: str, field: str) -> None:
        """Move one deadline column of the run's open tasks into the past."""
        raise NotImplementedError

    def make_timers_due(self, run_id: str) -> None:
        raise NotImplementedError

    def make_retries_due(self) -> bool:
        raise NotImplementedError

    def task_ids(self, run_id: str) -> list[int]:
        raise NotImplementedError

    def backdate_wakeups(self, seconds: float) -> None:
        raise NotImplementedError


class MemoryHarness(Harness):
    def __init__(self) -> None:
        self.clock = FakeClock()
        super().__init__(MemoryJournal(self.clock))
        self.memory: MemoryJournal = self.journal  # type: ignore[assignment]

    def _past(self) -> dt.datetime:
        return self.clock.now() - dt.timedelta(seconds=1)

    def run(self, run_id: str) -> dict[str, Any]:
        return vars(self.memory.runs[run_id])

    def expire_run_lease(self, run_id: str) -> None:
        self.memory.runs[run_id].lease_expires_at = self._past()

    def expire_task_leases(self, run_id: str) -> None:
        for task in self.memory.tasks.values():
            if task.run_id == run_id and task.status == "running":
                task.lease_expires_at = self._past()

    def pass_task_deadline(self, run_id: str, field: str) -> None:
        for task in self.memory.tasks.values():
            if task.run_id == run_id and task.status in ("scheduled", "running"):
                setattr(task, field, self._past())

    def make_timers_due(self, run_id: str) -> None:
        for timer in self.memory.timers.values():
            if timer.run_id == run_id:
                timer.fire_at = self._past()

    def make_retries_due(self) -> bool:
        waiting = [
            t
            for t in self.memory.tasks.values()
            if t.status == "scheduled" and t.next_attempt_at > self.clock.now()
        ]
        for task in waiting:
            task.next_attempt_at = self._past()
            self.sent.activities.append(task.id)
        return bool(waiting)

    def task_ids(self, run_id: str) -> list[int]:
        return sorted(t.id for t in self.memory.tasks.values() if t.run_id == run_id)

    def backdate_wakeups(self, seconds: float) -> None:
        for run in self.memory.runs.values():
            if run.next_wakeup_at is not None:
                run.next_wakeup_at -= dt.timedelta(seconds=seconds)


class OrmHarness(Harness):
    def __init__(self) -> None:
        from continuum_django.journal import OrmJournal

        super().__init__(OrmJournal())

    def run(self, run_id: str) -> dict[str, Any]:
        from continuum_django.models import WorkflowRun

        return WorkflowRun.objects.filter(pk=run_id).values()[0]

    def _past(self) -> Any:
        from django.db.models.functions import Now

        return Now() - dt.timedelta(seconds=1)

    def expire_run_lease(self, run_id: str) -> None:
        from continuum_django.models import WorkflowRun

        WorkflowRun.objects.filter(pk=run_id).update(lease_expires_at=self._past())

    def expire_task_leases(self, run_id: str) -> None:
        from continuum_django.models import ActivityTask

        ActivityTask.objects.filter(run_id=run_id, status="running").update(
            lease_expires_at=self._past()
        )

    def pass_task_deadline(self, run_id: str, field: str) -> None:
        from continuum_django.models import ActivityTask

        ActivityTask.objects.filter(run_id=run_id, status__in=["scheduled", "running"]).update(
            **{field: self._past()}
        )

    def make_timers_due(self, run_id: str) -> None:
        from continuum_django.models import Timer

        Timer.objects.filter(run_id=run_id).update(fire_at=self._past())

    def make_retries_due(self) -> bool:
        from django.db.models import Q
        from django.db.models.functions import Now

        from continuum_django.models import ActivityTask

        # A retry still waiting out its delay, and any scheduled task no hint is queued for:
        # on a busy machine a short delay may have passed before this looks, and such a task
        # would then wait for a sweep that never comes.
        waiting = ActivityTask.objects.filter(status="scheduled").filter(
            Q(next_attempt_at__gt=Now()) | ~Q(pk__in=self.sent.activities)
        )
        ids = list(waiting.values_list("id", flat=True))
        ActivityTask.objects.filter(pk__in=ids).update(next_attempt_at=self._past())
        self.sent.activities.extend(i for i in ids if i not in self.sent.activities)
        return bool(ids)

    def task_ids(self, run_id: str) -> list[int]:
        from continuum_django.models import ActivityTask

        return list(
            ActivityTask.objects.filter(run_id=run_id).order_by("id").values_list("id", flat=True)
        )

    def backdate_wakeups(self, seconds: float) -> None:
        from django.db.models import F

        from continuum_django.models import WorkflowRun

        WorkflowRun.objects.filter(next_wakeup_at__isnull=False).update(
            next_wakeup_at=F("next_wakeup_at") - dt.timedelta(seconds=seconds)
        )


# The ORM journal commits for real (transaction=True): its step path pipelines a
# transaction only when it is the outermost one, so a test wrapped in a transaction would
# not exercise it.
@pytest.fixture(
    params=["memory", pytest.param("orm", marks=pytest.mark.django_db(transaction=True))]
)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield MemoryHarness() if request.param == "memory" else OrmHarness()
