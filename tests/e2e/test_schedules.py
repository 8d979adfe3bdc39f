"""A cron schedule on real workers: each slot starts exactly one run, across two sweeping
workers and a beat that is killed in between; slots missed meanwhile are caught up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from continuum_django import Cron, schedules, signal
from continuum_django.models import Schedule, WorkflowRun
from tests.testapp import scheduled

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]
MINUTE = dt.timedelta(minutes=1)


def caught_up(pk: int) -> bool:
    """No slot of the schedule is due, and every run it started has completed."""
    row = Schedule.objects.get(pk=pk)
    done = row.next_fire_at is not None and row.next_fire_at > schedules.database_now()
    live = WorkflowRun.objects.filter(attributes__schedule=row.name).exclude(status="completed")
    return done and not live.exists()


def test_each_cron_slot_fires_once_across_two_workers_with_beat_killed_in_between(
    worker_factory: StartWorker,
) -> None:
    row = scheduled.scheduled_echo.schedule(
        Cron("* * * * *", name="minutely", overlap="allow", catchup="all",
             catchup_window=dt.timedelta(hours=2))
    )  # fmt: skip
    now = schedules.database_now().replace(second=0, microsecond=0)
    # Thirty minutes of slots came due while nothing ran (the database's clock is the one read).
    Schedule.objects.filter(pk=row.pk).update(next_fire_at=now - 30 * MINUTE)

    with_beat = worker_factory("beat", beat=True)
    worker_factory("plain")
    wait_until(lambda: caught_up(row.pk), timeout=90, what="the first thirty slots")
    with_beat.kill()  # the beat and its worker die; the other worker sweeps on its own

    # An hour back: thirty slots never fired, and thirty that did (a stale view of the row).
    Schedule.objects.filter(pk=row.pk).update(next_fire_at=now - 60 * MINUTE)
    wait_until(lambda: caught_up(row.pk), timeout=90, what="the slots missed meanwhile")

    last = Schedule.objects.get(pk=row.pk).last_slot
    assert last is not None
    expected = []
    slot = now - 60 * MINUTE
    while slot <= last:
        expected.append(f"schedule:minutely:{slot.astimezone(dt.UTC).isoformat()}")
        slot += MINUTE
    runs = WorkflowRun.objects.filter(attributes__schedule="minutely")
    keys = sorted(runs.values_list("idempotency_key", flat=True))
    assert keys == expected  # every slot once, none twice
    assert {r.result for r in runs} == {"tick"}


def test_a_one_shot_and_the_overlap_policies_on_a_real_worker(worker_factory: StartWorker) -> None:
    worker_factory()
    once = scheduled.scheduled_echo.schedule_at(schedules.database_now(), "once")
    buffered = scheduled.scheduled_wait.schedule(
        Cron("* * * * *", name="buffered", overlap="buffer_one", catchup="all")
    )
    cancelling = scheduled.scheduled_wait.schedule(
        Cron("* * * * *", name="cancelling", overlap="cancel_previous", catchup="all")
    )
    now = schedules.database_now().replace(second=0, microsecond=0)
    # Three slots due at once: the first starts, the second is buffered, the third dropped;
    # with cancel_previous, each slot cancels the run of the one before.
    Schedule.objects.filter(pk__in=[buffered.pk, cancelling.pk]).update(
        next_fire_at=now - 2 * MINUTE
    )

    def runs(name: str) -> list[WorkflowRun]:
        return list(WorkflowRun.objects.filter(attributes__schedule=name).order_by("created_at"))

    assert wait_until(lambda: runs(once.name) and runs(once.name)[0].status == "completed")
    assert Schedule.objects.get(pk=once.pk).next_fire_at is None

    first = wait_until(lambda: runs("buffered")[:1], what="the first buffered run")[0]
    wait_until(lambda: Schedule.objects.get(pk=buffered.pk).buffered_slot, what="a buffered slot")
    assert len(runs("buffered")) == 1
    signal(first.id, "go", "done")
    second = wait_until(lambda: runs("buffered")[1:2], what="the buffered slot's run")[0]
    assert second.attributes["slot"] == (now - MINUTE).astimezone(dt.UTC).isoformat()
    assert WorkflowRun.objects.get(pk=first.id).status == "completed"

    wait_until(lambda: len(runs("cancelling")) >= 3, what="three cancelling runs")
    *earlier, last = runs("cancelling")
    wait_until(
        lambda: all(WorkflowRun.objects.get(pk=r.id).status == "cancelled" for r in earlier),
        what="the earlier runs cancelled",
    )
    assert WorkflowRun.objects.get(pk=last.id).status not in ("cancelled", "failed")
