"""What idle schedules cost the sweep: its duration with none, then with 10,000 waiting.

The sweep finds due schedules by an index range scan over ``next_fire_at``, so schedules
whose next slot is in the future should cost it next to nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from statistics import median

from .report import Report

SWEEPS = 50  # per measurement; the median is reported


def _ms(sweeps: int, only_schedules: bool = False) -> float:
    """The median duration of ``sweeps`` sweeps (or of their schedules' part alone)."""
    from continuum_django.schedules import fire_due
    from continuum_django.sweeper import _sweep

    durations = []
    for _ in range(sweeps):
        began = time.perf_counter()
        fire_due() if only_schedules else _sweep()
        durations.append((time.perf_counter() - began) * 1000)
    return median(durations)


def _idle_schedules(count: int) -> None:
    from django.db import connection

    from continuum_django.models import Schedule

    far = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
    rows = [
        Schedule(
            name=f"bench-idle-{i}",
            workflow_name="bench.noop",
            kind="cron",
            cron="0 0 1 1 *",
            input={"args": [], "kwargs": {}},
            next_fire_at=far,
        )
        for i in range(count)
    ]
    Schedule.objects.bulk_create(rows, batch_size=1000)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Schedule._meta.db_table}")


def measure_idle_schedules(report: Report, count: int, sweeps: int = SWEEPS) -> None:
    from continuum_django.models import Schedule

    Schedule.objects.all().delete()
    _ms(3)  # warm the connection and the statement caches
    empty, empty_part = _ms(sweeps), _ms(sweeps, only_schedules=True)
    _idle_schedules(count)
    idle, idle_part = _ms(sweeps), _ms(sweeps, only_schedules=True)
    Schedule.objects.filter(name__startswith="bench-idle-").delete()
    report.note(
        f"schedules: one sweep (and its schedules' part alone), median of {sweeps}, "
        f"with 0 then {count} idle schedules"
    )
    report.figure("schedules.sweep_ms.none", empty, "ms")
    report.figure(f"schedules.sweep_ms.idle_{count}", idle, "ms")
    report.figure(f"schedules.sweep_cost_ratio.idle_{count}", idle / empty if empty else 0.0, "x")
    report.figure("schedules.fire_due_ms.none", empty_part, "ms")
    report.figure(f"schedules.fire_due_ms.idle_{count}", idle_part, "ms")
