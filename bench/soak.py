"""`python -m bench soak`: N runs using every feature under kill -9, broker flushes and a
Postgres restart; then the journal is read back and judged exactly-once.

Exits 1 when a check fails (a run not ended as expected, a duplicate or missing event, a
lost or doubled signal, a wrong result, or runs still live after the drain timeout).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .report import Report

T = TypeVar("T")
CANCEL_EVERY = 50  # runs i with i % 50 == 7 are cancelled (and never get their signal)
SIGNAL = "go"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="runs seeded (1000)")
    parser.add_argument(
        "--kill-every", nargs=2, type=float, default=(2.0, 4.0), metavar=("MIN", "MAX"),
        help="seconds between two kill -9s of a random worker (2 4)",
    )  # fmt: skip
    parser.add_argument("--chaos-seconds", type=float, default=150.0, help="chaos window (150)")
    parser.add_argument("--flushes", type=int, default=3, help="broker Redis flushes (3)")
    parser.add_argument("--postgres-restarts", type=int, default=1, help="Postgres restarts (1)")
    parser.add_argument("--no-postgres-restart", action="store_true", help="never restart it")
    parser.add_argument(
        "--postgres-restart-cmd",
        help="command restarting the soak's Postgres (default: pg_ctlcluster VERSION NAME "
        "restart for the local cluster on SOAK_DATABASE_URL's port)",
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (2)")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes each (2)")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--seed", type=int, default=14, help="seed of the chaos schedule (14)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.workers < 1 or not 0 < args.kill_every[0] <= args.kill_every[1]:
        parser.error("--runs and --workers must be >= 1 and 0 < --kill-every MIN <= MAX")
    return args


def cancelled(i: int) -> bool:
    return i % CANCEL_EVERY == 7


def retrying(what: str, fn: Callable[[], T], timeout: float = 120.0) -> T:
    """Call ``fn`` until it succeeds: Postgres may be restarting, the broker just flushed."""
    from django.db import close_old_connections, connections

    from continuum_django import ContinuumError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except ContinuumError:
            raise  # the engine's answer, not an outage
        except Exception as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: still failing after {timeout:.0f}s") from error
            for conn in connections.all():
                conn.close()
            close_old_connections()
            time.sleep(0.5)


def setup() -> dict[str, Any]:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.soak_settings"
    import django
    import redis
    from django.conf import settings
    from django.core.management import call_command

    from bench.celery_app import app  # noqa: F401 - the current app: dispatches go through it

    from . import db

    settings_dict: dict[str, Any] = settings.DATABASES["default"]
    db.recreate(settings_dict, settings_dict["NAME"])
    django.setup()
    call_command("migrate", verbosity=0)
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    client.close()
    return settings_dict


def restart_command(args: argparse.Namespace, settings_dict: dict[str, Any]) -> list[str] | None:
    from .soak_chaos import cluster_restart_command, parse_command

    if args.no_postgres_restart or args.postgres_restarts == 0:
        return None
    if args.postgres_restart_cmd:
        return parse_command(args.postgres_restart_cmd)
    command = cluster_restart_command(
        settings_dict.get("HOST") or "", int(settings_dict.get("PORT") or 5432)
    )
    if command is None:
        raise SystemExit(
            "no local Postgres cluster serves SOAK_DATABASE_URL: pass --postgres-restart-cmd "
            "or --no-postgres-restart"
        )
    return command


def seed(runs: int) -> list[str]:
    from django.db import transaction

    from .soak_workflows import order

    ids = []
    for first in range(0, runs, 100):
        with transaction.atomic():
            ids += [str(order.start(i).id) for i in range(first, min(first + 100, runs))]
    return ids


def main(argv: list[str] | None = None) -> int:
    from .soak_chaos import Chaos, Fleet, run_chaos
    from .soak_judge import judge

    began = time.monotonic()
    args = parse_args(argv)
    report = Report()
    settings_dict = setup()
    command = restart_command(args, settings_dict)
    logs = Path(tempfile.mkdtemp(prefix="continuum-soak-"))
    body_log = logs / "bodies.tsv"
    env = {"SOAK_BODY_LOG": str(body_log)}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    report.note(
        f"continuum-django soak: {args.runs} runs, {args.workers} workers -c {args.concurrency}, "
        f"kill -9 every {args.kill_every[0]:g}-{args.kill_every[1]:g} s for "
        f"{args.chaos_seconds:g} s, {args.flushes} broker flushes, postgres restart: "
        f"{' '.join(command) if command else 'no'}, seed {args.seed}, commit {commit or '?'}"
    )
    report.note(f"logs and activity-body log in {logs}")

    import redis
    from django.conf import settings

    from continuum_django import RunNotActive, cancel, signal

    fleet = Fleet(logs, args.concurrency, env)
    for index in range(args.workers):
        fleet.start(index)
    try:
        for worker in fleet.workers:
            worker.wait_ready()
        ids = seed(args.runs)
        rng = random.Random(args.seed)
        window = args.chaos_seconds
        sends: list[tuple[float, str, int]] = []
        for i in range(args.runs):
            if cancelled(i):
                sends.append((rng.uniform(0.05, 0.5) * window, "cancel", i))
                continue
            sends.append((rng.uniform(0.0, 0.6) * window, "signal", i))
            if i % 3 == 1:  # the same signal again, same dedupe key: delivered once
                sends.append((rng.uniform(0.0, 0.6) * window, "signal", i))
        sends.sort()
        sent: dict[str, int] = defaultdict(int)
        late = [0]

        def tick(elapsed: float) -> None:
            while sends and sends[0][0] <= elapsed:
                _, what, i = sends.pop(0)
                if what == "cancel":
                    retrying(f"cancel {i}", partial(cancel, ids[i], reason="soak"))
                    continue
                try:
                    retrying(
                        f"signal {i}",
                        partial(signal, ids[i], SIGNAL, {"i": i}, dedupe_key=f"go-{i}"),
                    )
                except RunNotActive:
                    if not sent[ids[i]]:
                        raise  # the run cannot end before its first signal: a defect
                    late[0] += 1  # a repeat that came after the run ended: refused, rightly
                sent[ids[i]] += 1

        def flush() -> None:
            client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
            client.flushdb()
            client.close()

        def restart_postgres() -> None:
            assert command is not None
            subprocess.run(command, check=True, capture_output=True)

        chaos = Chaos.plan(
            rng, window, tuple(args.kill_every), args.workers, args.flushes,
            args.postgres_restarts if command else 0,
        )  # fmt: skip
        chaos_began = time.monotonic()
        tally = run_chaos(chaos, fleet, flush, restart_postgres if command else None, tick)
        tick(float("inf"))
        chaos_ended = time.monotonic()
        drained = wait_drained(args.drain_timeout)
        drain_seconds = time.monotonic() - tally.last_disruption if tally.last_disruption else 0
    finally:
        fleet.stop()
    report.figure("soak.chaos_time", chaos_ended - chaos_began, "s")
    report.count("soak.kills", tally.kills, "kill -9")
    report.count("soak.broker_flushes", tally.flushes, "flushes")
    report.count("soak.postgres_restarts", tally.restarts, "restarts")
    report.count("soak.signals_sent", sum(sent.values()), "sends")
    report.count("soak.signal_repeats_refused", late[0], "sends after the run ended")
    report.count("soak.cancels_sent", sum(1 for i in range(args.runs) if cancelled(i)), "runs")
    ok = judge(report, ids, sent, body_log, fleet.killed_pids, tally.restart_windows)
    if drained:
        report.figure("soak.time_to_drain", drain_seconds, "s after the last disruption")
    else:
        report.line(f"soak.time_to_drain: NOT DRAINED after {args.drain_timeout:g} s")
    report.figure("soak.wall_time", time.monotonic() - began, "s")
    passed = ok and drained
    report.line(f"soak.verdict: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def wait_drained(timeout: float) -> bool:
    """Until no run is live (every seeded run, child and successor ended)."""
    from continuum_django.models import WorkflowRun

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if retrying("count live runs", lambda: WorkflowRun.objects.live().count()) == 0:
            return True
        time.sleep(1.0)
    return False
