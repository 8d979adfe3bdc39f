"""The suite's measurements, each printed as soon as it is taken: continuum and its peers."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import Report, percentile

STEPS_PER_RUN = 3


@dataclass(frozen=True, slots=True)
class Sizes:
    runs: int = 2000  # throughput: runs (and chains) per repeat
    repeats: int = 3
    latency_runs: int = 100
    short_steps: int = 10
    long_steps: int = 1000
    short_repeats: int = 5  # a 10-step run is short and noisy: a few more repeats
    dbcost_runs: int = 100
    raw_seconds: float = 5.0
    concurrency: int = 2  # one prefork worker with one process per core
    dbos: bool = True
    idle_schedules: int = 10_000  # what idle schedules cost the sweep (same in --smoke)
    label: str = "full"

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(
            runs=20,
            repeats=1,
            latency_runs=5,
            short_steps=3,
            long_steps=10,
            short_repeats=1,
            dbcost_runs=5,
            raw_seconds=1.0,
            dbos=False,
            label="smoke",
        )


def _mib(sizes: dict[str, int]) -> float:
    return sum(sizes.values()) / 1024


def measure_timed(report: Report, sizes: Sizes, logs: Path) -> None:
    """Throughput, memory, latency and history on one worker; the Celery chain on the same."""
    from . import phases
    from .cpu import CpuMeter
    from .peers import chain
    from .workers import Worker

    worker = Worker(sizes.concurrency, logs / "worker.log")
    try:
        worker.wait_ready()
        phases.throughput(worker, min(sizes.runs, 20), "warm-up")
        chain.throughput(min(sizes.runs, 20))
        rss_start = worker.rss_kib()
        meter = CpuMeter(worker)
        _throughput(
            report,
            "continuum",
            sizes,
            [phases.throughput(worker, sizes.runs, f"tp-{i}") for i in range(sizes.repeats)],
        )
        _cpu(report, "continuum", meter.spent(), sizes.runs * sizes.repeats)
        _memory(report, rss_start, worker.rss_kib())
        meter = CpuMeter(worker)
        _throughput(
            report,
            "celery_chain",
            sizes,
            [chain.throughput(sizes.runs) for _ in range(sizes.repeats)],
        )
        _cpu(report, "celery_chain", meter.spent(), sizes.runs * sizes.repeats)
        phases.vacuum()  # the throughput repeats' dead rows: not vacuumed while latency runs
        for name, measure in (("continuum", phases.latencies), ("celery_chain", chain.latencies)):
            _latency(report, name, [measure(sizes.latency_runs) for _ in range(sizes.repeats)])
        for label, steps, repeats in (
            ("short", sizes.short_steps, sizes.short_repeats),
            ("long", sizes.long_steps, sizes.repeats),
        ):
            timeout = 60.0 + steps * 2.0
            seconds = [phases.sequence_seconds(steps, timeout) for _ in range(repeats)]
            report.note(f"history.continuum.{label}: one run of {steps} sequential activities")
            report.median_figure(
                f"history.continuum.{label}.ms_per_step",
                [s * 1000 / steps for s in seconds],
                "ms/step",
            )
        if chain.missed:
            report.note(
                f"celery_chain: Celery's Redis result backend left {chain.missed} result(s)"
                f" unannounced; each was read from the backend after a {chain.STALL_SECONDS:.0f} s"
                " wait, which slows the chain's figures"
            )
    finally:
        worker.stop()


def _throughput(report: Report, name: str, sizes: Sizes, elapsed: list[float]) -> None:
    runs = [sizes.runs / e for e in elapsed]
    report.median_figure(f"throughput.{name}.runs_per_s", runs, "runs/s")
    steps = [r * STEPS_PER_RUN for r in runs]
    report.median_figure(f"throughput.{name}.steps_per_s", steps, "steps/s")


def _cpu(report: Report, name: str, spent: dict[str, float], runs: int) -> None:
    """CPU milliseconds per run by process group over all throughput repeats."""
    for group in ("worker_pool", "worker_main", "postgres", "broker", "starter", "other"):
        report.figure(f"cpu.{name}.{group}_ms_per_run", spent.get(group, 0.0) * 1000 / runs, "ms")
    report.figure(f"cpu.{name}.total_ms_per_run", sum(spent.values()) * 1000 / runs, "ms")


def _latency(report: Report, name: str, rounds: list[list[float]]) -> None:
    for pct in (50, 95):
        found = [percentile(r, pct) * 1000 for r in rounds]
        report.median_figure(f"latency.{name}.p{pct}_ms", found, "ms")


def _memory(report: Report, start: dict[str, int], end: dict[str, int]) -> None:
    report.figure("memory.continuum.worker_rss_start", _mib(start), "MiB")
    report.figure("memory.continuum.worker_rss_end", _mib(end), "MiB")
    report.figure("memory.continuum.worker_rss_growth", (_mib(end) / _mib(start) - 1) * 100, "%")
    report.figure("memory.continuum.largest_process_rss_end", max(end.values()) / 1024, "MiB")


def measure_db_cost(
    report: Report, sizes: Sizes, settings_dict: dict[str, Any], logs: Path
) -> None:
    """Statements and commits per step, counted inside a worker (and by pg_stat_database)."""
    from django.conf import settings
    from django.db import connection

    from . import db, phases
    from .workers import Worker

    name = settings_dict["NAME"]
    connection.close()
    # Sessions that ended a moment ago (the last worker's, ours) may not have reported their
    # commits to pg_stat_database yet: let them, or they would land inside this phase's delta.
    time.sleep(1.0)
    before = db.xact_commit(settings_dict, name)
    worker = Worker(sizes.concurrency, logs / "worker-counting.log", {"BENCH_COUNT_SQL": "1"})
    try:
        worker.wait_ready()
        costs = [
            phases.db_cost(worker, sizes.dbcost_runs, f"dbcost-{i}", settings.BENCH_REDIS_URL)
            for i in range(sizes.repeats)
        ]
    finally:
        worker.stop()
    connection.close()
    time.sleep(1.0)  # every session has ended; let their statistics reach pg_stat_database
    pg_commits = db.xact_commit(settings_dict, name) - before
    steps = sum(c.steps for c in costs)
    client_commits = sum(c.client_commits for c in costs)

    report.median_figure(
        "dbcost.continuum.commits_per_step", [c.total("commit") / c.steps for c in costs], "commits"
    )
    report.median_figure(
        "dbcost.continuum.statements_per_step",
        [c.total("statement") / c.steps for c in costs],
        "statements",
    )
    report.figure(
        "dbcost.continuum.pg_commits_per_step", (pg_commits - client_commits) / steps, "commits"
    )
    total: Counter[str] = Counter()
    for cost in costs:
        total.update(cost.worker)
    whole = phases.DbCost(runs=sum(c.runs for c in costs), worker=total, client_commits=0)
    for task, count in sorted(whole.tasks().items()):
        if not task.startswith("continuum."):
            continue  # the readiness ping
        short = task.rsplit(".", 1)[-1]
        report.figure(f"dbcost.detail.{short}.tasks_per_run", count / whole.runs, "tasks")
        report.figure(
            f"dbcost.detail.{short}.statements_per_task",
            whole.total("statement", task) / count,
            "statements",
        )
        report.figure(
            f"dbcost.detail.{short}.commits_per_task",
            whole.total("commit", task) / count,
            "commits",
        )
        report.figure(
            f"dbcost.detail.{short}.ms_per_task", whole.micros(task, "task_us") / count / 1000, "ms"
        )
        report.figure(
            f"dbcost.detail.{short}.statement_ms_per_task",
            whole.micros(task, "statement_us") / count / 1000,
            "ms",
        )
        for shape, n in whole.shapes(task).most_common():
            key = shape.lower().replace(" ", "_")
            report.figure(f"dbcost.detail.{short}.{key}", n / count, "per task")


def measure_raw(report: Report, sizes: Sizes, settings_dict: dict[str, Any]) -> None:
    from . import db
    from .peers import raw

    conninfo = db.conninfo(settings_dict)
    raw.create_tables(conninfo)
    rates = [
        raw.psycopg_tx_per_s(conninfo, sizes.concurrency, sizes.raw_seconds)
        for _ in range(sizes.repeats)
    ]
    report.median_figure("raw.psycopg.tx_per_s", rates, "tx/s")
    try:
        rates = [
            raw.pgbench_tx_per_s(settings_dict, sizes.concurrency, sizes.raw_seconds)
            for _ in range(sizes.repeats)
        ]
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        report.skip("raw.pgbench.tx_per_s", str(exc))
    else:
        report.median_figure("raw.pgbench.tx_per_s", rates, "tx/s")


def measure_dbos(report: Report, sizes: Sizes, settings_dict: dict[str, Any], logs: Path) -> None:
    from .peers import dbos_runner as dbos

    try:
        found = dbos.run(
            settings_dict, sizes.runs, sizes.repeats, sizes.latency_runs, logs / "dbos.log"
        )
    except dbos.Unavailable as exc:
        report.skip("dbos", str(exc))
        return
    report.note(
        f"dbos {found.version}, default settings, system database {settings_dict['NAME']}_dbos"
    )
    _throughput(report, "dbos", sizes, found.elapsed)
    if found.cpu:
        runs = sizes.runs * sizes.repeats
        for group in ("peer", "postgres", "other"):
            label = "process" if group == "peer" else group
            report.figure(
                f"cpu.dbos.{label}_ms_per_run", found.cpu.get(group, 0.0) * 1000 / runs, "ms"
            )
        report.figure("cpu.dbos.total_ms_per_run", sum(found.cpu.values()) * 1000 / runs, "ms")
        # About 1 core: its one process (workflows on threads, one GIL) is what bounds it.
        report.figure(
            "cpu.dbos.process_cores", found.cpu.get("peer", 0.0) / sum(found.elapsed), "cores"
        )
    _latency(report, "dbos", found.latencies)
    report.figure(
        "dbcost.dbos.pg_commits_per_step",
        found.commits / (found.workflows * STEPS_PER_RUN),
        "commits",
    )


def ratios(report: Report) -> None:
    report.line("")
    report.note("ratios (figures of this run)")
    tp = "throughput.{}.steps_per_s"
    for peer in ("dbos", "celery_chain"):
        report.ratio(f"steps_per_s.continuum_vs_{peer}", tp.format("continuum"), tp.format(peer))
    for limit in ("psycopg", "pgbench"):
        report.ratio(
            f"steps_per_s.continuum_vs_raw_{limit}", tp.format("continuum"), f"raw.{limit}.tx_per_s"
        )
        report.ratio(f"steps_per_s.dbos_vs_raw_{limit}", tp.format("dbos"), f"raw.{limit}.tx_per_s")
    for peer in ("celery_chain", "dbos"):
        report.ratio(
            f"cpu_per_run.continuum_vs_{peer}",
            "cpu.continuum.total_ms_per_run",
            f"cpu.{peer}.total_ms_per_run",
        )
    report.ratio(
        "history.long_vs_short_ms_per_step",
        "history.continuum.long.ms_per_step",
        "history.continuum.short.ms_per_step",
    )
    for pct in ("p50", "p95"):
        for peer in ("celery_chain", "dbos"):
            report.ratio(
                f"latency_{pct}.continuum_vs_{peer}",
                f"latency.continuum.{pct}_ms",
                f"latency.{peer}.{pct}_ms",
            )
