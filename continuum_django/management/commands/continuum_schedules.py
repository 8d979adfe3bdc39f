"""``manage.py continuum_schedules``: list, pause, resume, trigger and sync schedules.

``list [--format json]``: every schedule with its spec, state and next fire times;
``pause NAME [--note N]`` / ``resume NAME`` / ``trigger NAME`` (start a run now) /
``sync`` (make rows match ``@workflow(schedule=...)``, as ``migrate`` does).
Exit status: 0 done; 1 refused (the message says why, e.g. no such schedule).
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from continuum_django import schedules
from continuum_django.conf import app_settings
from continuum_django.engine.exceptions import ContinuumError
from continuum_django.models import Schedule


def as_json(row: Schedule) -> dict[str, Any]:
    return {
        "name": row.name,
        "workflow": row.workflow_name,
        "spec": schedules.describe(row),
        "paused": row.paused,
        "pause_note": row.pause_note,
        "declared": row.declared,
        "overlap": row.overlap,
        "catchup": row.catchup,
        "next_fire_times": [t.isoformat() for t in schedules.next_fire_times(row, 3)],
        "last_run_id": str(row.last_run_id) if row.last_run_id else None,
        "fired": row.fired_count,
        "dropped": row.dropped_count,
    }


class Command(BaseCommand):
    help = "List, pause, resume, trigger (start a run now) or sync (from code) schedules."

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        listing = actions.add_parser("list", help="every schedule and its next fire times")
        listing.add_argument("--format", choices=["text", "json"], default="text")
        pause = actions.add_parser("pause", help="stop firing a schedule")
        pause.add_argument("name", metavar="NAME")
        pause.add_argument("--note", default="paused from the command line")
        for action, what in (("resume", "fire again from now on"), ("trigger", "start a run now")):
            actions.add_parser(action, help=what).add_argument("name", metavar="NAME")
        actions.add_parser("sync", help="make rows match the schedules declared in code")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "list":
                self._list(options["format"])
            elif action == "pause":
                schedules.pause(options["name"], note=options["note"])
                self.stdout.write(f"schedule {options['name']} paused")
            elif action == "resume":
                row = schedules.resume(options["name"])
                self.stdout.write(f"schedule {row.name} resumed; next fire at {row.next_fire_at}")
            elif action == "trigger":
                run = schedules.trigger(options["name"])
                self.stdout.write(f"schedule {options['name']} triggered: run {run.id}")
            else:
                report = schedules.sync_declared()
                self.stdout.write(json.dumps(report.to_json()))
        except ContinuumError as exc:
            raise CommandError(str(exc), returncode=1) from exc

    def _list(self, fmt: str) -> None:
        rows = [
            as_json(row) for row in Schedule.objects.using(app_settings().DATABASE).order_by("name")
        ]
        if fmt == "json":
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for row in rows:
            state = "paused" if row["paused"] else "active"
            upcoming = ", ".join(row["next_fire_times"]) or "—"
            self.stdout.write(
                f"{row['name']}  {row['workflow']}  {row['spec']}  {state}  next: {upcoming}"
            )
