"""``manage.py continuum_versions``: the deploy gate and release tool for workflow versions.

Exit codes: 0 when all is well; 1 when ``check --strict`` finds a version live runs
need missing from this code, or ``replay-check`` finds a run that would drift; 2 for a
usage error. ``--format json`` writes one JSON document to stdout.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser, ArgumentTypeError, RawDescriptionHelpFormatter
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from continuum_django import retention, versions
from continuum_django.conf import app_settings
from continuum_django.models import ParkReason, WorkflowRun

HELP = {
    "list": "versions known: in this code, registered by workers, used by live runs",
    "check": "deploy gate: does this code have every version that live runs need?",
    "replay-check": "replay live runs' histories through this code and report drift; "
    "writes nothing",
    "release": "release runs parked on a version so that workers that have it resume them",
    "gc": "delete version rows no worker registered recently and no live run is on",
}


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ArgumentTypeError(f"must be a positive integer, not {value}")
    return number


class Command(BaseCommand):
    help = (
        "Workflow versions and deploys. Actions: "
        + "; ".join(f"{name}: {text}" for name, text in HELP.items())
        + ". Exit status: 0 all is well; 1 check --strict found a missing version, or "
        "replay-check found drift; 2 usage error. See 'continuum_versions ACTION --help'."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        for name, text in HELP.items():
            sub = actions.add_parser(
                name, help=text, description=text, formatter_class=RawDescriptionHelpFormatter
            )
            sub.add_argument(
                "--format", choices=["text", "json"], default="text", help="output format"
            )
            if name == "check":
                sub.add_argument(
                    "--strict",
                    action="store_true",
                    help="exit with status 1 when a version live runs need is missing",
                )
            if name in ("replay-check", "release"):
                sub.add_argument("--workflow", help="only runs of this workflow name")
            if name == "replay-check":
                sub.add_argument(
                    "--limit", type=_positive, help="check at most N runs, oldest first"
                )
            if name == "gc":
                sub.add_argument("--dry-run", action="store_true", help="delete nothing")
                sub.add_argument(
                    "--older-than",
                    type=_positive,
                    default=86400,
                    help="seconds since a worker last registered the row (default 86400)",
                )
            if name == "release":
                sub.add_argument(
                    "--version", type=_positive, help="only runs of this version (needs --workflow)"
                )
                sub.add_argument(
                    "--dry-run",
                    action="store_true",
                    help="list the runs that would be released; write nothing",
                )
                sub.add_argument(
                    "--yes",
                    action="store_true",
                    help="confirm releasing the parked runs of every workflow (no --workflow)",
                )

    def handle(self, *args: Any, action: str, format: str, **options: Any) -> None:
        if action == "list":
            found = versions.known_versions()
            self._out(format, {"versions": [v.to_json() for v in found]}, _list_text(found))
        elif action == "check":
            check = versions.check_deploy()
            self._out(format, check.to_json() | {"strict": options["strict"]}, _check_text(check))
            if options["strict"] and not check.ok:
                missing = ", ".join(f"{v.workflow} v{v.version}" for v in check.missing)
                raise CommandError(f"live runs need versions this code lacks: {missing}")
        elif action == "replay-check":
            report = versions.replay_check(options["workflow"], options["limit"])
            self._out(format, report.to_json(), _replay_text(report))
            if not report.ok:
                raise CommandError(f"{len(report.drifted)} live run(s) would drift on this code")
        elif action == "gc":
            rows = retention.collect_versions(
                timedelta(seconds=options["older_than"]), dry_run=options["dry_run"]
            )
            verb = "would delete" if options["dry_run"] else "deleted"
            text = f"{verb} {len(rows)} unused version row(s)" + "".join(
                f"\n  {r['workflow_name']} v{r['version']} ({r['version_hash']}), "
                f"last seen {r['last_seen']}"
                for r in rows
            )
            self._out(format, {"dry_run": options["dry_run"], "collected": rows}, text)
        else:
            self._release(format, options["workflow"], options["version"], options)

    def _release(
        self, format: str, workflow: str | None, version: int | None, options: dict[str, Any]
    ) -> None:
        if version is not None and workflow is None:
            raise CommandError("--version needs --workflow", returncode=2)
        if options["dry_run"]:
            would = _parked(workflow, version)
            text = f"would release {len(would)} parked run(s) (dry run: nothing written)"
            self._out(format, {"would_release": would, "dry_run": True}, _ids(text, would))
            return
        if workflow is None and not options["yes"]:
            raise CommandError(
                "release with no --workflow unparks the runs of every workflow at once: "
                "name one with --workflow W [--version V], see them first with --dry-run, "
                "or confirm with --yes",
                returncode=2,
            )
        released = versions.release(workflow, version, by="continuum_versions release")
        self._out(
            format,
            {"released": released},
            _ids(f"released {len(released)} parked run(s)", released),
        )

    def _out(self, format: str, document: dict[str, Any], text: str) -> None:
        self.stdout.write(json.dumps(document, indent=2) if format == "json" else text)


def _parked(workflow: str | None, version: int | None) -> list[str]:
    """Ids of the live runs parked on an unknown version that ``release`` would unpark."""
    runs = WorkflowRun.objects.using(app_settings().DATABASE).live()
    runs = runs.filter(park_reason=ParkReason.UNKNOWN_VERSION)
    if workflow is not None:
        runs = runs.filter(workflow_name=workflow)
    if version is not None:
        runs = runs.filter(workflow_version=version)
    return [str(run_id) for run_id in runs.order_by("created_at").values_list("id", flat=True)]


def _ids(head: str, run_ids: list[str]) -> str:
    return head + "".join(f"\n  {run_id}" for run_id in run_ids)


def _list_text(found: list[versions.KnownVersion]) -> str:
    if not found:
        return "no workflow versions are known"
    lines = []
    for v in found:
        code = f"in this code ({v.code_hash})" if v.in_code else "not in this code"
        lines.append(
            f"{v.workflow} v{v.version}: {code}; {v.live_runs} live run(s), {v.parked_runs} parked"
        )
        for b in v.builds:
            seen = f"last seen {b.last_seen} on {b.last_worker}" if b.last_seen else "no worker"
            lines.append(f"  {b.version_hash}: {b.live_runs} live run(s); {seen}")
    return "\n".join(lines)


def _check_text(check: versions.DeployCheck) -> str:
    if not check.needed:
        return "OK: no live runs, so any code can be deployed"
    lines = []
    for v in check.needed:
        if not v.in_code:
            state = "MISSING from this code"
        elif all(b.version_hash == v.code_hash for b in v.builds if b.live_runs):
            state = "in this code"
        else:
            state = "in this code, changed since some runs started (run replay-check)"
        lines.append(f"{v.workflow} v{v.version}: {v.live_runs} live run(s): {state}")
    verdict = (
        "OK: this code has every version live runs need"
        if check.ok
        else (f"NOT SAFE: {len(check.missing)} version(s) live runs need are missing")
    )
    return "\n".join([*lines, verdict])


def _replay_text(report: versions.ReplayReport) -> str:
    lines = [f"{v.workflow} v{v.version} run {v.run_id}: {v.drift}" for v in report.drifted] + [
        f"skipped run {s['run_id']} ({s['workflow']} v{s['version']}): {s['reason']}"
        for s in report.skipped
    ]
    lines.append(
        f"{'OK' if report.ok else 'DRIFT'}: replayed {report.checked} live run(s), "
        f"{len(report.drifted)} would drift, {len(report.skipped)} skipped"
    )
    return "\n".join(lines)
