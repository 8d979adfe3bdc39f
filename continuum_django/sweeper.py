"""Workers sweep by themselves, one at a time per database, so Celery beat is optional.

Every worker's main process runs a `Sweeper` thread that, each ``SWEEP_INTERVAL``, takes a
Postgres advisory lock without waiting and sweeps only if it got it: the sweep is
idempotent, the lock only spares the database the same work done N times. The lock is a
session lock held for one sweep; a worker killed mid-sweep loses its connection and with
it the lock, so the next worker's tick sweeps. Other databases have no such lock: there
every worker sweeps (still correct, only more work).
"""

from __future__ import annotations

import logging
import threading

from django.db import connections

from .conf import app_settings

logger = logging.getLogger("continuum")

# A tick woken for a timer waits this much past its due time, so the timer is due by then.
MARGIN = 0.005

# The advisory lock key of the sweep ("continu" in ASCII, a signed 64-bit int).
SWEEP_LOCK = int.from_bytes(b"continu", "big")


def sweep_exclusively() -> dict[str, int] | None:
    """Run the sweep unless another process is sweeping the journal's database right now.
    Returns the sweep's counts, or None when it left the sweep to the other process."""
    connection = connections[app_settings().DATABASE]
    if connection.vendor != "postgresql":
        return _recorded(_sweep())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [SWEEP_LOCK])
        (held,) = cursor.fetchone()
    if not held:
        return None
    try:
        return _recorded(_sweep())
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [SWEEP_LOCK])
        except Exception:
            connection.close()  # closing the session releases its locks too


def _sweep() -> dict[str, int]:
    """The engine's sweep, then the schedules' due slots."""
    from .schedules import fire_due
    from .worker import runtime

    counts = runtime().sweep()
    counts.update(fire_due(limit=runtime().sweep_limit))
    return counts


def _recorded(counts: dict[str, int]) -> dict[str, int]:
    """Leave the sweep's time and counts where ``continuum_health`` and monitors read them."""
    from .health import record_sweep

    record_sweep(counts)
    return counts


def seconds_to_next_timer() -> float | None:
    """Seconds from the database's clock to the earliest open timer's due time (one read of
    the due-timers index); None when there is none, or it is due already (a timer the
    sweep just left is waiting for something else than time: a run locked by its writer)."""
    from django.db.models import DurationField, ExpressionWrapper, F, Min
    from django.db.models.functions import Now

    from .models import Timer

    timers = Timer.objects.using(app_settings().DATABASE).filter(fired=False, cancelled=False)
    gap = timers.aggregate(
        gap=ExpressionWrapper(Min(F("fire_at")) - Now(), output_field=DurationField())
    )["gap"]
    if gap is None or gap.total_seconds() <= 0:
        return None
    return gap.total_seconds()


def _full(counts: dict[str, int] | None) -> bool:
    from .worker import runtime

    limit = runtime().sweep_limit * runtime().timer_batches
    return counts is not None and counts.get("timers_fired", 0) >= limit


class Sweeper(threading.Thread):
    """Sweeps every ``interval`` seconds in a worker's main process until stopped, and
    sooner when a timer falls due before the next interval (on Postgres): a burst of timers
    due at one moment is fired from that moment, not up to an interval later."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="continuum-sweeper", daemon=True)
        self.interval = interval
        self.wait = interval  # until the next tick
        self._stopping = threading.Event()

    def tick(self) -> dict[str, int] | None:
        try:
            counts = sweep_exclusively()
            self.wait = self._next_wait()
            return counts
        except Exception:
            logger.exception("sweeping from this worker")
            self.wait = self.interval
            return None
        finally:
            # No connection stays open in the worker's main process for its pool to inherit
            # when it forks a new child.
            connections[app_settings().DATABASE].close()

    def sweep_burst(self) -> int:
        """Tick; while a tick fired as many timers as one sweep may (a burst fell due at
        once), tick again at once rather than leave the rest an interval late. Returns the
        ticks taken."""
        ticks = 1
        while _full(self.tick()) and not self._stopping.is_set():
            ticks += 1
        return ticks

    def _next_wait(self) -> float:
        if connections[app_settings().DATABASE].vendor != "postgresql":
            return self.interval
        due_in = seconds_to_next_timer()
        if due_in is None:
            return self.interval
        return min(self.interval, due_in + MARGIN)

    def run(self) -> None:
        while not self._stopping.wait(self.wait):
            self.sweep_burst()

    def stop(self) -> None:
        self._stopping.set()
