"""``continuum_health`` against a real worker with beat: its sweeps record themselves, its
queues are found consumed, and a run it finishes leaves nothing stuck."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from continuum_django.health import health_report
from continuum_django.models import SweepRecord
from tests.testapp import workflows as wf

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_working_fleet_is_healthy(worker_factory: Callable[..., WorkerProcess]) -> None:
    worker_factory("h1", beat=True)
    run = wf.three_steps.start(1)
    assert run.result(timeout=60) is not None
    wait_until(
        lambda: SweepRecord.objects.filter(runs_total__gte=2).exists(), what="two recorded sweeps"
    )

    report = health_report(inspect_workers=2.0)
    assert report.ok, report.reasons
    assert report.live_runs == 0
    assert report.sweep.runs_total >= 2 and "timers_fired" in report.sweep.last_counts
    assert report.workers.last_seen is not None
    assert [name.split("@")[0] for name in report.workers.inspected or []] == ["h1"]
    assert report.queues.needed == ["continuum"] and report.queues.without_consumer == []
