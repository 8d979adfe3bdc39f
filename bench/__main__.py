"""`python -m bench [--smoke]`: start what the benchmark needs, measure, print the figures.

`python -m bench soak` runs the chaos soak instead (bench/soak.py).

Every figure is the median of its repeats and every ratio compares figures measured in
this same run. bench/README.md says how to read them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from .flow import measure_flow
from .report import Report
from .schedules import measure_idle_schedules
from .suite import (
    STEPS_PER_RUN,
    Sizes,
    measure_db_cost,
    measure_dbos,
    measure_raw,
    measure_timed,
    ratios,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and no DBOS: checks that the suite works, in well under a minute",
    )
    parser.add_argument("--runs", type=int, help="runs per throughput repeat (2000)")
    parser.add_argument("--repeats", type=int, help="repeats of each measurement (3)")
    parser.add_argument("--concurrency", type=int, help="prefork processes of the worker (2)")
    parser.add_argument("--long-steps", type=int, help="activities of the long workflow (1000)")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS peer")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument(
        "--scale",
        action="store_true",
        help="the scale phase instead of the suite: figures on empty tables, then on a "
        "journal of 1,000,000 finished runs and 110,000 sleeping ones, and their ratios",
    )
    scale.add_argument(
        "--scale-small",
        action="store_true",
        help="the scale phase at a fiftieth of the size: finishes in minutes",
    )
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.smoke() if args.smoke else Sizes()
    overrides: dict[str, Any] = {
        "runs": args.runs,
        "repeats": args.repeats,
        "concurrency": args.concurrency,
        "long_steps": args.long_steps,
    }
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    if args.no_dbos:
        sizes = dataclasses.replace(sizes, dbos=False)
    return sizes


def setup(settings_module: str = "bench.settings") -> dict[str, Any]:
    """Fresh database and Redis db, migrated; Django and the Celery app ready in this process."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django
    import redis
    from django.conf import settings
    from django.core.management import call_command

    from bench.celery_app import app  # the current Celery app: starts are sent through it

    from . import db

    settings_dict: dict[str, Any] = settings.DATABASES["default"]
    db.recreate(settings_dict, settings_dict["NAME"])
    django.setup()
    call_command("migrate", verbosity=0)
    client = redis.Redis.from_url(settings.BENCH_REDIS_URL)
    client.flushdb()
    client.close()
    if settings.CELERY_BROKER_URL != settings.BENCH_REDIS_URL:
        app.control.purge()  # messages left by an interrupted run
    return settings_dict


def header(report: Report, sizes: Sizes, settings_dict: dict[str, Any], logs: Path) -> None:
    import redis
    from django.conf import settings

    from . import db

    client = redis.Redis.from_url(settings.BENCH_REDIS_URL)
    redis_version = client.info("server").get("redis_version", "?")
    client.close()
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    report.note(f"continuum-django benchmark ({sizes.label})")
    report.note(
        f"machine: {os.cpu_count()} cores, {ram_gib:.1f} GiB RAM, {_cpu_model()}, "
        f"{platform.system()} {platform.release()}"
    )
    report.note(
        f"software: Python {platform.python_version()}, PostgreSQL "
        f"{db.server_version(settings_dict)}, Redis {redis_version}, Django {version('django')}, "
        f"Celery {version('celery')}, psycopg {version('psycopg')}, commit {commit or '?'}"
    )
    report.note(
        f"sizes: {sizes.runs} runs x {sizes.repeats} repeats, latency {sizes.latency_runs} runs, "
        f"history {sizes.long_steps} vs {sizes.short_steps} steps, one worker "
        f"-c {sizes.concurrency} prefork; logs in {logs}"
    )
    broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
    report.note(f"broker: {broker} (continuum and the Celery chain), results: redis")
    report.note(f"a step is one activity and the advance that follows it ({STEPS_PER_RUN} per run)")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:
        from .soak import main as soak

        return soak(argv[1:])
    began = time.monotonic()
    args = parse_args(argv)
    if args.scale or args.scale_small:
        return main_scale(args, began)
    sizes = sizes_from(args)
    logs = Path(tempfile.mkdtemp(prefix="continuum-bench-"))
    report = Report()
    settings_dict = setup()
    header(report, sizes, settings_dict, logs)
    plan: list[tuple[str, Callable[[], None]]] = [
        ("continuum and celery chain", lambda: measure_timed(report, sizes, logs)),
        ("database cost", lambda: measure_db_cost(report, sizes, settings_dict, logs)),
        ("raw database", lambda: measure_raw(report, sizes, settings_dict)),
        ("idle schedules", lambda: measure_idle_schedules(report, sizes.idle_schedules)),
        ("flow control", lambda: measure_flow(report, sizes, logs)),
    ]
    if sizes.dbos:
        plan.append(("dbos", lambda: measure_dbos(report, sizes, settings_dict, logs)))
    for name, measure in plan:
        phase_began = time.monotonic()
        measure()
        report.note(f"phase {name}: {time.monotonic() - phase_began:.0f} s")
    if not sizes.dbos:
        report.line("dbos: skipped (--smoke or --no-dbos)")
    ratios(report)
    report.targets()
    report.line("")
    report.figure("bench.wall_time", time.monotonic() - began, "s")
    return 0


def main_scale(args: argparse.Namespace, began: float) -> int:
    """The scale phase: its own empty-table figures, the seeding, the figures at size."""
    from .scale import ScaleSizes, measure_scale

    scale = ScaleSizes.small() if args.scale_small else ScaleSizes()
    overrides = {"runs": args.runs, "repeats": args.repeats, "concurrency": args.concurrency}
    scale = dataclasses.replace(scale, **{k: v for k, v in overrides.items() if v is not None})
    logs = Path(tempfile.mkdtemp(prefix="continuum-bench-"))
    report = Report()
    settings_dict = setup("bench.scale_settings")
    sizes = dataclasses.replace(
        Sizes(), runs=scale.runs, repeats=scale.repeats, latency_runs=scale.latency_runs,
        concurrency=scale.concurrency, label=scale.label,
    )  # fmt: skip
    header(report, sizes, settings_dict, logs)
    report.note(
        f"scale: {scale.finished_runs} finished runs (10 events each), {scale.sleeping_runs}"
        f" asleep on timers, {scale.waiting_runs} waiting on signals, bursts of"
        f" {scale.burst_timers} timers"
    )
    measure_scale(report, scale, logs)
    report.line("")
    report.figure("bench.wall_time", time.monotonic() - began, "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
