"""The sweep run by workers: one at a time per database, under a Postgres advisory lock."""

from __future__ import annotations

import pytest
from django.db import connections

from continuum_django.models import Timer, WorkflowRun
from continuum_django.sweeper import SWEEP_LOCK, Sweeper, sweep_exclusively
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _due_timer() -> Timer:
    run = RunFactory(status="suspended")
    return Timer.objects.create(run=run, command_id="0:timer:sleep", fire_at="2000-01-01T00:00Z")


def test_a_sweep_is_left_to_the_process_holding_the_lock() -> None:
    timer = _due_timer()
    other = connections.create_connection("default")  # another process's session
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [SWEEP_LOCK])
        assert sweep_exclusively() is None
        assert not Timer.objects.get(pk=timer.pk).fired  # it swept nothing
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [SWEEP_LOCK])
        counts = sweep_exclusively()
        assert counts is not None and counts["timers_fired"] == 1
        assert Timer.objects.get(pk=timer.pk).fired
    finally:
        other.close()


def test_the_lock_is_released_after_each_sweep() -> None:
    assert sweep_exclusively() is not None
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [SWEEP_LOCK])
            assert cursor.fetchone()[0] is True
            cursor.execute("SELECT pg_advisory_unlock(%s)", [SWEEP_LOCK])
    finally:
        other.close()


def test_a_tick_survives_an_error_and_closes_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> None:
        raise RuntimeError("sweep broke")

    monkeypatch.setattr("continuum_django.sweeper.sweep_exclusively", broken)
    assert Sweeper(1.0).tick() is None
    assert connections["default"].connection is None
    assert WorkflowRun.objects.count() == 0  # and the next query reconnects
