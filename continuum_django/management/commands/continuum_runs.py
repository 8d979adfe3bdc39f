"""``manage.py continuum_runs``: operator actions on runs from the command line.

``retry RUN_ID --reason R``: unpark a parked run, or reopen a failed run at its failed
activity; ``dead-letter TASK_ID --reason R``: mark a failed activity task as handled.
Every action records its operator (``--operator``, default the OS user) and reason.
Exit status: 0 done; 1 the action was refused (the message says why).
"""

from __future__ import annotations

import getpass
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from continuum_django.engine.exceptions import ContinuumError
from continuum_django.operations import dead_letter, retry


class Command(BaseCommand):
    help = (
        "Operator actions on runs: 'retry RUN_ID' unparks a parked run or reopens a failed "
        "run at its failed activity with a fresh attempt budget; 'dead-letter TASK_ID' marks "
        "a failed activity task as handled. Each needs --reason and records --operator."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        retry_parser = actions.add_parser("retry", help="retry a parked or failed run")
        retry_parser.add_argument("target", metavar="RUN_ID")
        retry_parser.add_argument(
            "--revision",
            type=int,
            help="act only if the run is still at this revision (what you looked at)",
        )
        dead = actions.add_parser("dead-letter", help="mark a failed activity task as handled")
        dead.add_argument("target", metavar="TASK_ID", type=int)
        for sub in (retry_parser, dead):
            sub.add_argument("--reason", required=True, help="why (kept with the action)")
            sub.add_argument("--operator", default=None, help="who (default: the OS user)")

    def handle(self, *args: Any, **options: Any) -> None:
        operator = options["operator"] or getpass.getuser()
        try:
            if options["action"] == "retry":
                done = retry(
                    options["target"],
                    operator=operator,
                    reason=options["reason"],
                    revision=options["revision"],
                )
                self.stdout.write(f"run {options['target']} {done} by {operator}")
            else:
                dead_letter(options["target"], operator=operator, reason=options["reason"])
                self.stdout.write(f"activity task {options['target']} dead-lettered by {operator}")
        except (ContinuumError, ValueError) as exc:
            raise CommandError(str(exc), returncode=1) from exc
