"""``manage.py continuum_prune``: delete the runs that outlived ``CONTINUUM["RETENTION"]``.

A dry run unless ``--execute``: it prints what would be deleted, per workflow.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand

from continuum_django.retention import PruneReport, prune_runs


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ArgumentTypeError(f"must be a positive integer, not {value!r}") from None
    if number < 1:
        raise ArgumentTypeError(f"must be a positive integer, not {value}")
    return number


class Command(BaseCommand):
    help = (
        "Delete ended runs past CONTINUUM['RETENTION'] with everything they own (a "
        "continue_as_new chain and its child runs as one unit). Dry run unless --execute."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--execute", action="store_true", help="delete (default: dry run)")
        parser.add_argument(
            "--batch-size",
            type=_positive,
            default=100,
            help="run trees per transaction (default 100; a tree is never split)",
        )
        keys = parser.add_mutually_exclusive_group()
        keys.add_argument(
            "--keep-idempotency-keys",
            dest="keep_keys",
            action="store_true",
            default=True,
            help="keep the run row holding an idempotency key, without its history (default)",
        )
        keys.add_argument(
            "--forget-idempotency-keys",
            dest="keep_keys",
            action="store_false",
            help="delete those rows too: their keys can start new runs again",
        )
        parser.add_argument("--workflow", help="only trees whose chain ended in this workflow")
        parser.add_argument("--format", choices=["text", "json"], default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        report = prune_runs(
            execute=options["execute"],
            batch_size=options["batch_size"],
            keep_idempotency_keys=options["keep_keys"],
            workflow=options["workflow"],
        )
        if options["format"] == "json":
            self.stdout.write(json.dumps(report.to_json(), indent=2))
        else:
            self.stdout.write(_text(report))


def _text(report: PruneReport) -> str:
    verb = "deleted" if report.executed else "would delete"
    lines = [
        f"{name}: {verb} {c['trees']} tree(s), {c['runs']} run(s)"
        + (f"; {c['kept']} run(s) kept for their idempotency key" if c["kept"] else "")
        for name, c in sorted(report.workflows.items())
    ]
    rows = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in report.rows.items())
    lines.append(
        f"{'Deleted' if report.executed else 'DRY RUN: would delete'} "
        f"{report.total('trees')} tree(s), {report.total('runs')} run(s), {rows}"
    )
    if report.live_trees:
        lines.append(f"left {report.live_trees} expired tree(s) alone: a run in them is live")
    if not report.executed:
        lines.append("Run with --execute to delete.")
    return "\n".join(lines)
