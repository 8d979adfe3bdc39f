"""``manage.py continuum_health``: what is stuck, for an operator or a monitor.

Exit codes: 0 when the report is ``ok``, and also when it is ``degraded`` without
``--strict`` (the report says so); 1 when ``--strict`` and the report is ``degraded``;
2 for a usage error. ``--format json`` writes one JSON document to stdout.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from continuum_django.health import WAITS, HealthReport, Problem, Thresholds, health_report, when
from continuum_django.models import FlowState

DEFAULTS = Thresholds()


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ArgumentTypeError(f"must be a number of seconds, not {value!r}") from None
    if not number > 0:
        raise ArgumentTypeError(f"must be a positive number of seconds, not {value}")
    return number


class Command(BaseCommand):
    help = (
        "Report what is stuck: runs by wait reason, overdue wake-ups and timers, expired "
        "leases, failing activities, parked runs, workers and the sweep. Exit status: 0 ok "
        "(or degraded without --strict); 1 degraded with --strict; 2 usage error."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument(
            "--strict", action="store_true", help="exit with status 1 when degraded"
        )
        for name, help in [
            ("overdue_after", "a wake-up, timer or lease past due this long is overdue"),
            ("stuck_after", "a run or activity owed work and unchanged this long is stuck"),
            ("sweep_after", "the sweep silent this long is a problem"),
            ("worker_after", "no worker beat for this long, with live runs, is a problem"),
        ]:
            default = getattr(DEFAULTS, name)
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                type=_seconds,
                default=default,
                metavar="SECONDS",
                help=f"{help} (default {default:g})",
            )
        parser.add_argument(
            "--inspect-workers",
            type=_seconds,
            nargs="?",
            const=1.0,
            metavar="SECONDS",
            help="ask the Celery workers, through the broker, which queues they consume "
            "(waiting SECONDS, default 1) and report queues with no consumer",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        thresholds = Thresholds(
            overdue_after=options["overdue_after"],
            stuck_after=options["stuck_after"],
            sweep_after=options["sweep_after"],
            worker_after=options["worker_after"],
        )
        report = health_report(thresholds, inspect_workers=options["inspect_workers"])
        if options["format"] == "json":
            self.stdout.write(json.dumps(report.to_json(), indent=2, cls=DjangoJSONEncoder))
        else:
            self.stdout.write(render_text(report))
        if options["strict"] and not report.ok:
            raise CommandError(f"degraded: {len(report.reasons)} problem(s)")


def render_text(report: HealthReport) -> str:
    """The report as a few aligned sections, problems first."""
    lines = [f"{report.status.upper()} at {when(report.checked_at)}"]
    lines += [f"  - {reason}" for reason in report.reasons]
    lines.append("")
    oldest = report.oldest_live_run_at
    lines.append(
        f"live runs: {report.live_runs}" + (f" (oldest started {when(oldest)})" if oldest else "")
    )
    for status, n in sorted(report.runs_by_status.items()):
        lines.append(f"  {status:<26}{n:>8}")
    lines.append("waiting for:")
    for kind, n in report.runs_by_wait.items():
        lines.append(f"  {WAITS[kind]:<26}{n:>8}")
    if report.throttled_activities:
        lines.append("activities held back by flow control:")
        for state, n in report.throttled_activities.items():
            lines.append(f"  {FlowState(state).label:<32}{n:>8}")
    lines.append("problems:")
    for name in [
        "overdue_runs",
        "stalled_runs",
        "expired_run_leases",
        "overdue_timers",
        "expired_task_leases",
        "waiting_activities",
        "failing_activities",
    ]:
        problem: Problem = getattr(report, name)
        detail = f"  oldest {when(problem.oldest)}" if problem.count else ""
        lines.append(f"  {name.replace('_', ' '):<26}{problem.count:>8}{detail}")
    for task in report.failing:
        lines.append(
            f"    {task.activity} (run {task.run_id}) attempt {task.attempt} of "
            f"{task.max_attempts}, {task.status}: {task.error_type}: {task.error_message[:120]}"
        )
    for reason, n in sorted(report.parked_by_reason.items()):
        lines.append(f"  parked: {reason:<18}{n:>8}")
    sweep = report.sweep
    lines.append(f"sweep: last ran {when(sweep.last_run_at)}")
    if sweep.runs_total:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(sweep.last_counts.items()))
        lines.append(f"  on {sweep.last_worker}, {sweep.runs_total} sweeps; last: {counts}")
    workers = report.workers
    lines.append(
        f"workers: last beat {when(workers.last_seen)}"
        + (f" ({', '.join(workers.recent)})" if workers.recent else "")
    )
    if workers.inspected is not None:
        lines.append(f"  answering: {', '.join(workers.inspected) or 'none'}")
    queues = report.queues
    without = "unknown (use --inspect-workers)"
    if queues.without_consumer is not None:
        without = ", ".join(queues.without_consumer) or "none"
    lines.append(f"queues: {', '.join(queues.needed)}; without a consumer: {without}")
    return "\n".join(lines)
