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


def test_the_next_tick_is_at_the_next_timer_when_it_falls_due_sooner() -> None:
    import datetime as dt

    from django.db.models import F
    from django.db.models.functions import Now

    from continuum_django.sweeper import MARGIN, seconds_to_next_timer

    sweeper = Sweeper(interval=1.0)
    sweeper.tick()
    assert seconds_to_next_timer() is None and sweeper.wait == 1.0  # no timer: the interval

    run = RunFactory(status="suspended")
    timer = Timer.objects.create(run=run, command_id="0:timer:sleep", fire_at="2000-01-01T00:00Z")
    Timer.objects.filter(pk=timer.pk).update(fire_at=Now() + dt.timedelta(seconds=30))
    assert 29 < (seconds_to_next_timer() or 0) <= 30  # on the database's clock
    sweeper.tick()
    assert sweeper.wait == 1.0  # due after the interval: the interval

    Timer.objects.filter(pk=timer.pk).update(fire_at=F("fire_at") - dt.timedelta(seconds=29.6))
    sweeper.tick()
    assert MARGIN < sweeper.wait < 0.4 + MARGIN  # due sooner: woken for it

    Timer.objects.filter(pk=timer.pk).update(fired=True)
    sweeper.tick()
    assert sweeper.wait == 1.0  # a fired timer is not waited for


def test_the_next_timer_is_found_through_the_due_timers_index() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from continuum_django.sweeper import seconds_to_next_timer

    with CaptureQueriesContext(connection) as sent:
        seconds_to_next_timer()
    (query,) = [q["sql"] for q in sent.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"EXPLAIN {query}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    assert "continuum_timer_due" in plan, plan
