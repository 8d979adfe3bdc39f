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


def _full(counts: dict[str, int] | None) -> bool:
    from .worker import runtime

    limit = runtime().sweep_limit * runtime().timer_batches
    return counts is not None and counts.get("timers_fired", 0) >= limit


class Sweeper(threading.Thread):
    """Sweeps every ``interval`` seconds in a worker's main process until stopped."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="continuum-sweeper", daemon=True)
        self.interval = interval
        self._stopping = threading.Event()

    def tick(self) -> dict[str, int] | None:
        try:
            return sweep_exclusively()
        except Exception:
            logger.exception("sweeping from this worker")
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

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.sweep_burst()

    def stop(self) -> None:
        self._stopping.set()
