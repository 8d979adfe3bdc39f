"""Workflow versions across a deployment: what workers carry, what live runs need, what drifts.

Each `continuum_versions` subcommand is a thin shell over one function here, and the
admin calls the same functions. "The code" always means the workflows registered in
this process: the code being deployed when a deploy pipeline runs the command.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Count, Q

from .conf import app_settings
from .engine.definitions import Registry
from .engine.definitions import registry as default_registry
from .engine.verify import ReplayVerdict, replay_history
from .journal import to_event
from .models import WorkflowEvent, WorkflowRun, WorkflowVersion
from .worker import CeleryDispatcher, runtime

logger = logging.getLogger("continuum")

Key = tuple[str, int]


# -- registration ------------------------------------------------------------


def register_worker(
    worker: str, *, queue: str | None = None, registry: Registry = default_registry
) -> list[str]:
    """Record the versions this worker carries, and release the runs parked on them.

    Released runs are sent to ``queue`` (the worker's own queue) when given, so the
    worker that has their code is the one that resumes them. Returns their ids.
    """
    using = app_settings().DATABASE
    rows = [
        WorkflowVersion(
            workflow_name=d.name, version=d.version, version_hash=d.version_hash, worker=worker
        )
        for _, d in sorted(registry.workflows.items())
    ]
    WorkflowVersion.objects.using(using).bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["workflow_name", "version", "version_hash"],
        update_fields=["worker", "last_seen"],
    )
    engine = runtime()
    if queue is not None:
        engine = dataclasses.replace(engine, dispatcher=CeleryDispatcher(using, queue))
    released = engine.release_parked(
        sorted(registry.workflows), f"released by worker {worker}, which has this version"
    )
    if released:
        logger.info("worker %s resumes %d run(s) parked on its versions", worker, len(released))
    return released


def release(
    workflow: str | None = None, version: int | None = None, *, by: str = "an operator"
) -> list[str]:
    """Release runs parked as ``unknown_version`` (all, one workflow's, or one version's)
    so that capable workers pick them up. Returns their ids."""
    if version is not None and workflow is None:
        raise ValueError("a version can only be released together with its workflow name")
    keys = None if workflow is None else [(workflow, version)]
    return runtime().release_parked(keys, f"released by {by}")


# -- list ----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Build:
    """One code hash of a version: when workers were first/last seen with it, runs on it."""

    version_hash: str
    first_seen: str | None = None
    last_seen: str | None = None
    last_worker: str = ""
    live_runs: int = 0


@dataclass(slots=True, kw_only=True)
class KnownVersion:
    workflow: str
    version: int
    in_code: bool
    code_hash: str | None
    live_runs: int = 0
    parked_runs: int = 0
    builds: list[Build] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def known_versions(registry: Registry = default_registry) -> list[KnownVersion]:
    """Every version workers registered, live runs use or this code holds."""
    using = app_settings().DATABASE
    builds: dict[Key, dict[str, Build]] = defaultdict(dict)
    for row in WorkflowVersion.objects.using(using).order_by("first_seen"):
        builds[(row.workflow_name, row.version)][row.version_hash] = Build(
            version_hash=row.version_hash,
            first_seen=row.first_seen.isoformat(),
            last_seen=row.last_seen.isoformat(),
            last_worker=row.worker,
        )
    parked: Counter[Key] = Counter()
    for run in _live_runs(using):
        key = (run["workflow_name"], run["workflow_version"])
        build = builds[key].setdefault(run["version_hash"], Build(version_hash=run["version_hash"]))
        build.live_runs += run["runs"]
        parked[key] += run["parked"]
    for key in registry.workflows:
        builds.setdefault(key, {})
    versions = []
    for key in sorted(builds):
        definition = registry.workflows.get(key)
        found = list(builds[key].values())
        versions.append(
            KnownVersion(
                workflow=key[0],
                version=key[1],
                in_code=definition is not None,
                code_hash=definition.version_hash if definition else None,
                live_runs=sum(b.live_runs for b in found),
                parked_runs=parked[key],
                builds=found,
            )
        )
    return versions


def _live_runs(using: str) -> list[dict[str, Any]]:
    """Live runs counted by workflow, version and code hash."""
    counts = (
        WorkflowRun.objects.using(using)
        .live()
        .values("workflow_name", "workflow_version", "version_hash")
        .annotate(runs=Count("id"), parked=Count("id", filter=~Q(park_reason="")))
        .order_by("workflow_name", "workflow_version", "version_hash")
    )
    return [dict(row) for row in counts]


# -- check -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeployCheck:
    """Whether this code has every version that live runs need."""

    needed: list[KnownVersion]

    @property
    def missing(self) -> list[KnownVersion]:
        return [v for v in self.needed if not v.in_code]

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "missing": [_short(v) for v in self.missing],
            "needed": [
                _short(v)
                | {
                    "in_code": v.in_code,
                    "code_hash": v.code_hash,
                    "run_hashes": sorted(b.version_hash for b in v.builds if b.live_runs),
                }
                for v in self.needed
            ],
        }


def _short(version: KnownVersion) -> dict[str, Any]:
    return {
        "workflow": version.workflow,
        "version": version.version,
        "live_runs": version.live_runs,
        "parked_runs": version.parked_runs,
    }


def check_deploy(registry: Registry = default_registry) -> DeployCheck:
    """The deploy gate: every version a non-terminal run needs must exist in this code."""
    return DeployCheck(needed=[v for v in known_versions(registry) if v.live_runs])


# -- replay-check --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayReport:
    checked: int
    drifted: list[ReplayVerdict]
    skipped: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not self.drifted

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "drifted": [v.to_json() for v in self.drifted],
            "skipped": self.skipped,
        }


def replay_check(
    workflow: str | None = None, limit: int | None = None, registry: Registry = default_registry
) -> ReplayReport:
    """Replay the histories of live runs (oldest first) through this code; writes nothing.

    Runs whose version this code lacks are skipped (``check`` reports those).
    """
    using = app_settings().DATABASE
    runs = WorkflowRun.objects.using(using).live().order_by("created_at", "id")
    if workflow is not None:
        runs = runs.filter(workflow_name=workflow)
    drifted: list[ReplayVerdict] = []
    skipped: list[dict[str, Any]] = []
    checked = 0
    # Workflow code runs here; whatever it might write by mistake is rolled back.
    with transaction.atomic(using=using):
        for run in runs.only("id", "workflow_name", "workflow_version")[:limit]:
            definition = registry.workflows.get((run.workflow_name, run.workflow_version))
            if definition is None:
                skipped.append(
                    {
                        "run_id": str(run.id),
                        "workflow": run.workflow_name,
                        "version": run.workflow_version,
                        "reason": "this code has no such version",
                    }
                )
                continue
            events = WorkflowEvent.objects.using(using).filter(run_id=run.id).order_by("seq")
            verdict = replay_history(definition, [to_event(e) for e in events], run_id=str(run.id))
            checked += 1
            if not verdict.ok:
                drifted.append(verdict)
        transaction.set_rollback(True, using=using)
    return ReplayReport(checked=checked, drifted=drifted, skipped=skipped)


__all__ = [
    "DeployCheck",
    "KnownVersion",
    "ReplayReport",
    "check_deploy",
    "known_versions",
    "register_worker",
    "release",
    "replay_check",
]
