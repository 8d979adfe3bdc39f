"""A cron schedule on real workers: each slot starts exactly one run, across two sweeping
workers and a beat that is killed in between; slots missed meanwhile are caught up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from continuum_django import Cron, schedules
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
