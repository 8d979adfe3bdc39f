"""The scale phase (`python -m bench --scale` / `--scale-small`): the same figures on empty
tables and on a journal the size of a production one, and their ratios.

The journal is seeded by copying real runs: one run of each shape is made by a worker
through the public API (a finished 4-activity run of 10 events, a run asleep on a timer,
a run waiting on a signal) and its rows (run, events, activity tasks, timers) are cloned
server-side with ``INSERT … SELECT … FROM generate_series`` under fresh ids: the same rows
the engine writes, a million of them in minutes instead of a million round trips.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from .report import Report, Target, median, percentile

BURST_LEAD_SECONDS = 1.0  # the burst's timers fall due this long after they are armed
FAR_FUTURE = "interval '30 days'"


@dataclass(frozen=True, slots=True)
class ScaleSizes:
    finished_runs: int = 1_000_000  # 10 events each: 10,000,000 events
    sleeping_runs: int = 100_000  # asleep on a timer due in 30 days
    waiting_runs: int = 10_000  # waiting on a signal
    burst_timers: int = 10_000  # timers due in the same second
    runs: int = 2000  # throughput: runs per repeat
    repeats: int = 3
    latency_runs: int = 100
    samples: int = 20  # sweeps, admin pages and result() calls timed
    deep_steps: int = 5000  # activities of the deep run: a 10,000-event history
    replay_steps: int = 5000  # the in-memory replay's history: 10,000 events
    chunk: int = 50_000  # runs cloned per transaction
    concurrency: int = 2
    label: str = "scale"

    @classmethod
    def small(cls) -> ScaleSizes:
        return cls(
            finished_runs=20_000,
            sleeping_runs=2_000,
            waiting_runs=200,
            burst_timers=1_000,
            runs=300,
            repeats=2,
            latency_runs=30,
            samples=10,
            deep_steps=500,
            chunk=10_000,
            label="scale-small",
        )


# Each figure and which way is worse: "time" grows when slower, "rate" shrinks.
POINT_FIGURES = {
    "steps_per_s": "rate",
    "latency_p50_ms": "time",
    "latency_p95_ms": "time",
    "result_ms": "time",
    "sweep_ms": "time",
    "sweep_statements": "time",
    "sweep_db_ms": "time",
    "timer_lateness_p50_s": "time",
    "timer_lateness_p99_s": "time",
    "admin_run_list_ms": "time",
    "admin_run_page_ms": "time",
}

SCALE_TARGETS = [
    *(
        Target(
            f"scale_{name}",
            f"scale.slowdown.{name}",
            None,
            1.2,
            True,
            "at size within 1.2x of the empty-table figure",
            "x",
        )
        for name in (
            "steps_per_s",
            "latency_p50_ms",
            "latency_p95_ms",
            "result_ms",
            "sweep_ms",
            "sweep_db_ms",
        )
    ),
    Target(
        "scale_sweep_statements",
        "scale.slowdown.sweep_statements",
        None,
        1.0,
        True,
        "a sweep sends as many statements at size as on empty tables",
        "x",
    ),
    Target(
        "timer_burst_p99",
        "scale.at_size.timer_lateness_p99_s",
        None,
        2.0,
        True,
        "timers due in the same second, at size: p99 from due time to timer_fired <= 2 s",
        "s",
    ),
    Target(
        "replay_per_event",
        "replay.memory.us_per_event",
        None,
        7.0,
        True,
        "in-memory replay of a 10,000-event history <= 7 us per event",
        "us/event",
    ),
    Target(
        "deep_history_step",
        "history.continuum.deep_vs_short_step",
        None,
        2.0,
        True,
        "a step of a run with a deep history <= 2x a 10-step run's",
        "x",
    ),
    Target(
        "admin_run_list",
        "scale.at_size.admin_run_list_ms",
        None,
        300.0,
        True,
        "admin run list at size < 300 ms",
        "ms",
    ),
    Target(
        "admin_run_page",
        "scale.at_size.admin_run_page_ms",
        None,
        300.0,
        True,
        "admin run page at size < 300 ms",
        "ms",
    ),
]


def slowdown(kind: str, empty: float, at_size: float) -> float | None:
    """How many times worse the figure at size is than on empty tables (1.0: flat)."""
    if kind == "rate":
        return empty / at_size if at_size else None
    if empty == 0:
        return 1.0 if at_size == 0 else None
    return at_size / empty


@dataclass(frozen=True, slots=True)
class Templates:
    finished: str  # a completed 4-activity run: 10 events, 4 activity tasks
    sleeper: str  # suspended on a timer 30 days away
    waiter: str  # suspended on a signal


def measure_scale(report: Report, sizes: ScaleSizes, logs: Path) -> None:
    """Measure on empty tables, seed to size, measure again, print the slowdowns."""
    from . import phases
    from .workers import Worker

    worker = Worker(sizes.concurrency, logs / "worker-scale.log")
    try:
        worker.wait_ready()
        phases.throughput(worker, 20, "warm-up")
        templates = make_templates()
        empty = measure_point(report, "empty", sizes, worker, templates)
        began = time.monotonic()
        seed(report, sizes, templates)
        report.note(f"seeded in {time.monotonic() - began:.0f} s")
        at_size = measure_point(report, "at_size", sizes, worker, templates, explain=True)
        report.line("")
        report.note("slowdown at size (at-size figure over empty-table figure, 1.0 is flat)")
        for name, kind in POINT_FIGURES.items():
            if name in empty and name in at_size:
                value = slowdown(kind, empty[name], at_size[name])
                if value is not None:
                    report.figure(f"scale.slowdown.{name}", value, "x")
        measure_deep_history(report, sizes, worker)
    finally:
        worker.stop()
    measure_replay(report, sizes)
    report.targets(SCALE_TARGETS, "scale targets (measured in this run)")


def make_templates() -> Templates:
    """One real run of each shape, made by the worker; their rows are what `seed` copies."""
    from continuum_django.models import RunStatus, Timer, WorkflowRun

    from .workflows import sequence, sleeper, waiter

    finished = sequence.options(namespace="template").start(4)
    finished.result(timeout=60)
    asleep = sleeper.options(namespace="template").start(30 * 86400)
    waiting = waiter.options(namespace="template").start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        suspended = WorkflowRun.objects.filter(
            pk__in=[asleep.id, waiting.id], status=RunStatus.SUSPENDED
        ).count()
        if suspended == 2 and Timer.objects.filter(run_id=asleep.id).exists():
            return Templates(str(finished.id), str(asleep.id), str(waiting.id))
        time.sleep(0.05)
    raise RuntimeError("the template runs did not suspend within 60 s")


def clone(
    template: str,
    count: int,
    namespace: str,
    *,
    age_seconds: bool = False,
    timer_fire_at: str | None = None,
    chunk: int = 50_000,
) -> None:
    """Copy run ``template`` and its events, activity tasks and timers ``count`` times.

    ``age_seconds`` moves the n-th copy's times n seconds into the past (finished runs of
    the last days, older than anything measured); ``timer_fire_at`` is an SQL expression
    for the copies' timers' due time.
    """
    from django.db import connection, models, transaction

    from continuum_django.models import ActivityTask, Timer, WorkflowEvent, WorkflowRun

    def columns(model: type[models.Model], own: dict[str, str]) -> tuple[str, str]:
        names, exprs = [], []
        for field in model._meta.concrete_fields:
            column = field.column
            if field.primary_key and model is not WorkflowRun:
                continue
            names.append(f'"{column}"')
            if column in own:
                exprs.append(own[column])
            elif isinstance(field, models.DateTimeField) and age_seconds:
                exprs.append(f"t.\"{column}\" - c.n * interval '1 second'")
            else:
                exprs.append(f't."{column}"')
        return ", ".join(names), ", ".join(exprs)

    run_cols = columns(
        WorkflowRun,
        {
            "id": "c.id",
            "namespace": "%(namespace)s",
            "chain_root_id": "c.id",
            "idempotency_key": "NULL",
        },
    )
    children = [
        (model, columns(model, {"run_id": "c.id", **extra}))
        for model, extra in (
            (WorkflowEvent, {}),
            (ActivityTask, {}),
            (Timer, {"fire_at": timer_fire_at} if timer_fire_at else {}),
        )
    ]
    done = 0
    while done < count:
        size = min(chunk, count - done)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE bench_clone ON COMMIT DROP AS SELECT gen_random_uuid() AS id,"
                " g AS n FROM generate_series(%(first)s::int, %(last)s::int) g",
                {"first": done + 1, "last": done + size},
            )
            names, exprs = run_cols
            cursor.execute(
                f"INSERT INTO {WorkflowRun._meta.db_table} ({names}) SELECT {exprs} FROM "
                f"bench_clone c, {WorkflowRun._meta.db_table} t WHERE t.id = %(template)s",
                {"namespace": namespace, "template": template},
            )
            for model, (names, exprs) in children:
                cursor.execute(
                    f"INSERT INTO {model._meta.db_table} ({names}) SELECT {exprs} FROM "
                    f"bench_clone c, {model._meta.db_table} t WHERE t.run_id = %(template)s",
                    {"template": template},
                )
        done += size


def seed(report: Report, sizes: ScaleSizes, templates: Templates) -> None:
    from django.db import connection

    from continuum_django.models import WorkflowEvent, WorkflowRun

    for template, count, namespace, aged in (
        (templates.finished, sizes.finished_runs, "seed-finished", True),
        (templates.sleeper, sizes.sleeping_runs, "seed-sleeping", False),
        (templates.waiter, sizes.waiting_runs, "seed-waiting", False),
    ):
        began = time.monotonic()
        clone(template, count, namespace, age_seconds=aged, chunk=sizes.chunk)
        report.note(f"seeded {count} runs like {namespace}: {time.monotonic() - began:.0f} s")
    with connection.cursor() as cursor:
        # What autovacuum would have done over the days these rows took to accumulate.
        cursor.execute("VACUUM (ANALYZE)")
        cursor.execute(
            "SELECT pg_size_pretty(pg_database_size(current_database()))",
        )
        (db_size,) = cursor.fetchone()
    report.count("scale.seed.runs", WorkflowRun.objects.count(), "runs")
    report.count("scale.seed.events", _estimate(WorkflowEvent), "events (estimate)")
    report.note(f"database size after seeding: {db_size}")


def _estimate(model: Any) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [model._meta.db_table]
        )
        (rows,) = cursor.fetchone()
    return int(rows)


def measure_point(
    report: Report,
    point: str,
    sizes: ScaleSizes,
    worker: Any,
    templates: Templates,
    *,
    explain: bool = False,
) -> dict[str, float]:
    """Every figure of the scale phase on the journal as it is now: ``scale.<point>.*``."""
    from . import phases

    report.line("")
    report.note(f"scale phase, {point.replace('_', ' ')}")
    found: dict[str, float] = {}

    def keep(name: str, value: float, unit: str, repeats: list[float] | None = None) -> None:
        found[name] = value
        report.figure(f"scale.{point}.{name}", value, unit, repeats)

    rates = [
        sizes.runs * phases.STEPS_PER_RUN / phases.throughput(worker, sizes.runs, f"{point}-tp{i}")
        for i in range(sizes.repeats)
    ]
    keep("steps_per_s", median(rates), "steps/s", rates)
    phases.vacuum()
    rounds = [phases.latencies(sizes.latency_runs) for _ in range(sizes.repeats)]
    for pct in (50, 95):
        values = [percentile(r, pct) * 1000 for r in rounds]
        keep(f"latency_p{pct}_ms", median(values), "ms", values)
    keep("result_ms", median(time_result(templates.finished, sizes.samples)) * 1000, "ms")
    durations, statements, plans = time_sweeps(sizes.samples)
    keep("sweep_ms", median(durations) * 1000, "ms")
    keep("sweep_statements", median(statements), "statements")
    # The database's own time for the sweep's queries (EXPLAIN ANALYZE's execution time,
    # summed): what grows with the tables, without this process's scheduling noise.
    executed = [
        float(line.split(":", 1)[1].split()[0])
        for plan in plans
        for line in plan
        if line.startswith("Execution Time:")
    ]
    keep("sweep_db_ms", sum(executed), "ms")
    for index, plan in enumerate(plans if explain else [], start=1):
        for line in plan:
            report.note(f"explain sweep statement {index}: {line}")
    lateness = timer_burst(worker, templates.sleeper, sizes.burst_timers, f"{point}-burst")
    report.count(f"scale.{point}.timers_fired", len(lateness), "timers")
    keep("timer_lateness_p50_s", percentile(lateness, 50), "s")
    keep("timer_lateness_p99_s", percentile(lateness, 99), "s")
    keep("admin_run_list_ms", median(time_admin("list", templates, sizes.samples)) * 1000, "ms")
    keep("admin_run_page_ms", median(time_admin("page", templates, sizes.samples)) * 1000, "ms")
    return found


def _timed(call: Callable[[], Any], samples: int) -> list[float]:
    call()  # warm: connection, prepared statements, templates
    found = []
    for _ in range(samples):
        began = time.perf_counter()
        call()
        found.append(time.perf_counter() - began)
    return found


def time_result(run_id: str, samples: int) -> list[float]:
    """``result()`` of a finished run: a read of its row by the client API."""
    from continuum_django.client import result

    return _timed(lambda: result(run_id, timeout=5), samples)


class _Statements:
    """An execute wrapper that keeps the statements a sweep sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.sent.append((sql, params))
        return execute(sql, params, many, context)


def time_sweeps(samples: int) -> tuple[list[float], list[int], list[list[str]]]:
    """Sweeps in this process (the worker's sweeps go on meanwhile): duration, statements,
    and the plan of each query of the last one (EXPLAIN ANALYZE, rolled back)."""
    from django.db import connection, transaction

    from continuum_django.worker import runtime

    sweeper = runtime()
    durations, statements = [], []
    sent = _Statements()
    sweeper.sweep()
    for _ in range(samples):
        sent = _Statements()
        with connection.execute_wrapper(sent):
            began = time.perf_counter()
            sweeper.sweep()
            durations.append(time.perf_counter() - began)
        statements.append(len(sent.sent))
    plans: list[list[str]] = []
    for sql, params in sent.sent:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params)
            plans.append([sql] + [row[0] for row in cursor.fetchall()])
            transaction.set_rollback(True)
    return durations, statements, plans


def timer_burst(worker: Any, template: str, count: int, namespace: str) -> list[float]:
    """Seconds from due time to ``timer_fired`` for ``count`` timers armed in one statement
    to fall due at the same moment, fired by the worker's own sweeps."""
    from django.db import connection

    from continuum_django.models import Timer, WorkflowEvent, WorkflowRun

    clone(template, count, namespace, timer_fire_at=f"now() + {FAR_FUTURE}")
    runs = WorkflowRun.objects.filter(namespace=namespace).values("id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Timer._meta.db_table} SET fire_at = now() + %s * interval '1 second'"
            f" WHERE run_id IN (SELECT id FROM {WorkflowRun._meta.db_table}"
            " WHERE namespace = %s)",
            [BURST_LEAD_SECONDS, namespace],
        )
    fired = WorkflowEvent.objects.filter(run__in=runs, type="timer_fired")
    deadline = time.monotonic() + 120 + count / 20
    while fired.count() < count:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {fired.count()} of {count} burst timers fired")
        time.sleep(0.2)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXTRACT(EPOCH FROM e.created_at - t.fire_at)"
            f" FROM {WorkflowEvent._meta.db_table} e JOIN {Timer._meta.db_table} t"
            " ON t.run_id = e.run_id AND t.command_id = e.command_id"
            f" JOIN {WorkflowRun._meta.db_table} r ON r.id = e.run_id"
            " WHERE r.namespace = %s AND e.type = 'timer_fired'",
            [namespace],
        )
        return [float(row[0]) for row in cursor.fetchall()]


@contextmanager
def _admin_client() -> Iterator[Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    yield client


def time_admin(page: str, templates: Templates, samples: int) -> list[float]:
    """The admin's run list (first page, no filter) or a finished run's page, in-process."""
    from django.urls import reverse

    if page == "list":
        url = reverse("admin:continuum_workflowrun_changelist")
    else:
        url = reverse("admin:continuum_workflowrun_change", args=[templates.finished])

    with _admin_client() as client:

        def get() -> None:
            response = client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}")

        return _timed(get, samples)


def measure_deep_history(report: Report, sizes: ScaleSizes, worker: Any) -> None:
    """A step of a run whose history is deep against a step of a 10-step run, by the
    journal's own clock: the time between consecutive ``activity_completed`` events."""
    from continuum_django.models import WorkflowEvent

    from .workflows import sequence

    report.line("")
    report.note(f"deep history: one run of {sizes.deep_steps} activities against one of 10")
    step_ms: dict[int, float] = {}
    for steps in (10, sizes.deep_steps):
        handle = sequence.options(namespace=f"deep-{steps}").start(steps)
        handle.result(timeout=120 + steps)
        times = list(
            WorkflowEvent.objects.filter(run_id=handle.id, type="activity_completed")
            .order_by("seq")
            .values_list("created_at", flat=True)
        )
        gaps = [(b - a).total_seconds() * 1000 for a, b in pairwise(times)]
        last = gaps[-max(len(gaps) // 10, 5) :]  # the deepest tenth of the run
        step_ms[steps] = median(last)
    report.figure("history.continuum.short_step_ms", step_ms[10], "ms")
    report.figure("history.continuum.deep_step_ms", step_ms[sizes.deep_steps], "ms")
    report.note(f"deep: the last tenth of a {2 * sizes.deep_steps + 2}-event history")
    report.figure(
        "history.continuum.deep_vs_short_step", step_ms[sizes.deep_steps] / step_ms[10], "x"
    )


def measure_replay(report: Report, sizes: ScaleSizes) -> None:
    """In-memory replay: the engine's `advance` over a finished history, per event; and an
    advance at the deep end of a history against one near its start."""
    from continuum_django.engine.replay import advance
    from continuum_django.testing import WorkflowEnvironment

    from .workflows import sequence

    runner = WorkflowEnvironment().runner
    run_id = runner.start(sequence, sizes.replay_steps)
    runner.run_until_idle(max_steps=10 * sizes.replay_steps)
    history = runner.journal.history(run_id)
    now = dt.datetime.now(dt.UTC)
    rounds = iter(range(1_000_000))  # a fresh run id each time: no cached index

    def replay(events: list[Any]) -> Callable[[], Any]:
        return lambda: advance(sequence, run_id=f"r{next(rounds)}", history=events, now=now)

    whole = _timed(replay(history), 5)
    report.line("")
    report.figure("replay.memory.us_per_event", median(whole) * 1e6 / len(history), "us", None)
    report.note(f"replay.memory: {len(history)} events of bench.sequence, median of 5")
    # An advance after the last activity completed: replays the history, schedules the next.
    deep = median(_timed(replay(history[:-1]), 5))
    short = median(_timed(replay(history[:11]), 200))
    report.figure("replay.memory.advance_deep_ms", deep * 1000, "ms")
    report.figure("replay.memory.advance_short_ms", short * 1000, "ms")
    report.figure("replay.memory.advance_deep_vs_short", deep / short, "x")
