"""Retention: which ended runs outlived ``CONTINUUM["RETENTION"]``, and deleting them whole.

The unit of deletion is a *tree*: a top-level continue_as_new chain with every child run
(and their chains and children) below it. A tree expires when its chain's tip has ended
and the tip's retention has passed since it ended (computed from ``finished_at`` at
prune time, so a changed setting applies to runs that already ended); a tree in which
any run is still live is never deleted. Retention is measured on the database clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Now

from .conf import Retention, app_settings
from .journal import internals
from .models import (
    TERMINAL,
    ActivityTask,
    RunStatus,
    Signal,
    Timer,
    WorkflowEvent,
    WorkflowRun,
    WorkflowVersion,
)

# What a tree's runs own, in the order it is deleted (signals point at the events).
OWNED: dict[str, type[Signal | Timer | ActivityTask | WorkflowEvent]] = {
    "signals": Signal,
    "timers": Timer,
    "activity_tasks": ActivityTask,
    "events": WorkflowEvent,
}
ENDED = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED]  # a chain's tip ends so
CHUNK = 500  # ids per statement: well under any database's limit on parameters
RUN_FIELDS = ("id", "status", "idempotency_key")


# -- finding expired trees ----------------------------------------------------------------


def expired_condition(retention: Retention) -> Q | None:
    """Ended runs past their workflow's retention, or None when every run is kept."""
    conditions = [
        Q(workflow_name=name, finished_at__lt=Now() - keep)
        for name, keep in sorted(retention.workflows.items())
        if keep is not None
    ]
    if retention.default is not None:
        conditions.append(
            Q(finished_at__lt=Now() - retention.default)
            & ~Q(workflow_name__in=list(retention.workflows))
        )
    if not conditions:
        return None
    expired = conditions[0]
    for condition in conditions[1:]:
        expired |= condition
    return expired


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree:
    """One expired top-level chain and everything below it, ready to delete."""

    workflow: str
    runs: list[Any]  # every run of the tree, the deepest first (children before parents)
    keep: list[Any]  # runs kept for their idempotency key: the chain's head (and its tip)

    @property
    def gone(self) -> list[Any]:
        return [run_id for run_id in self.runs if run_id not in self.keep]


def expired_tips(
    retention: Retention, *, workflow: str | None = None, keep_keys: bool = True
) -> QuerySet[WorkflowRun]:
    """The ended tips of top-level chains whose retention has passed.

    With ``keep_keys``, runs already pruned down to their idempotency key (no history
    left) are not offered again.
    """
    runs = WorkflowRun.objects.using(app_settings().DATABASE)
    expired = expired_condition(retention)
    if expired is None:
        return runs.none()
    tips = runs.filter(expired, parent_run__isnull=True, status__in=ENDED)
    if workflow is not None:
        tips = tips.filter(workflow_name=workflow)
    if keep_keys:
        tips = tips.filter(Exists(WorkflowEvent.objects.filter(run=OuterRef("pk"))))
    return tips


def tree_of(tip: WorkflowRun, *, keep_keys: bool = True) -> Tree | None:
    """The tree whose chain ends in ``tip``; None while any of its runs is live."""
    runs = WorkflowRun.objects.using(app_settings().DATABASE)
    root = tip.chain_root_id or tip.id
    chain = runs.filter(Q(chain_root_id=root) | Q(pk=root), parent_run__isnull=True)
    levels = [list(chain.values(*RUN_FIELDS))]
    while levels[-1]:  # the runs one level below the last
        levels.append(
            [
                row
                for ids in _chunks([row["id"] for row in levels[-1]])
                for row in runs.filter(parent_run_id__in=ids).values(*RUN_FIELDS)
            ]
        )
    if any(row["status"] not in TERMINAL for rows in levels for row in rows):
        return None
    head = next((row for row in levels[0] if row["id"] == root), None)
    keep = []
    if keep_keys and head is not None and head["idempotency_key"] is not None:
        keep = list(dict.fromkeys([head["id"], tip.id]))
    deepest_first = [row["id"] for rows in reversed(levels) for row in rows]
    return Tree(workflow=tip.workflow_name, runs=deepest_first, keep=keep)


# -- pruning ----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class PruneReport:
    """What a prune deleted (or, in a dry run, would delete): per workflow and in rows."""

    executed: bool
    workflows: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OWNED, 0))
    live_trees: int = 0  # expired trees left alone because a run in them is live

    def add(self, tree: Tree, rows: dict[str, int], runs: int) -> None:
        counts = self.workflows.setdefault(tree.workflow, {"trees": 0, "runs": 0, "kept": 0})
        counts["trees"] += 1
        counts["runs"] += runs
        counts["kept"] += len(tree.keep)
        for name, count in rows.items():
            self.rows[name] += count

    def total(self, what: str) -> int:
        return sum(counts[what] for counts in self.workflows.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "executed": self.executed,
            "trees": self.total("trees"),
            "runs": self.total("runs"),
            "kept": self.total("kept"),
            "rows": dict(self.rows),
            "workflows": {name: dict(c) for name, c in sorted(self.workflows.items())},
            "live_trees": self.live_trees,
        }


def prune_runs(
    *,
    execute: bool = False,
    batch_size: int = 100,
    keep_idempotency_keys: bool = True,
    workflow: str | None = None,
    retention: Retention | None = None,
) -> PruneReport:
    """Delete (with ``execute``; else only count) every expired tree, oldest first.

    Each batch of up to ``batch_size`` trees is one transaction, and a tree is never split.
    With ``keep_idempotency_keys``, a chain's head that holds an idempotency key stays (with
    its tip, so starting again with the key returns the run and its outcome); only their
    history goes. Several prunes may run at once: each tree is taken by one of them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    policy = retention or app_settings().retention
    using = app_settings().DATABASE
    tips = expired_tips(policy, workflow=workflow, keep_keys=keep_idempotency_keys)
    tips = tips.order_by("finished_at", "id").only(
        "id", "chain_root_id", "workflow_name", "finished_at"
    )
    report = PruneReport(executed=execute)
    after: tuple[dt.datetime | None, Any] | None = None
    while True:
        with transaction.atomic(using=using):
            page = tips if after is None else tips.filter(_after(*after))
            if execute:
                page = page.select_for_update(skip_locked=True)
            batch = list(page[:batch_size])
            if not batch:
                return report
            after = (batch[-1].finished_at, batch[-1].id)
            for tip in batch:
                tree = tree_of(tip, keep_keys=keep_idempotency_keys)
                if tree is None:
                    report.live_trees += 1
                elif execute:
                    report.add(tree, *_delete(using, tree))
                else:
                    report.add(tree, _count(using, tree.runs), len(tree.gone))


def _after(finished_at: dt.datetime | None, run_id: Any) -> Q:
    return Q(finished_at__gt=finished_at) | Q(finished_at=finished_at, id__gt=run_id)


def _count(using: str, run_ids: list[Any]) -> dict[str, int]:
    return {
        name: sum(
            model.objects.using(using).filter(run_id__in=ids).count() for ids in _chunks(run_ids)
        )
        for name, model in OWNED.items()
    }


def _delete(using: str, tree: Tree) -> tuple[dict[str, int], int]:
    """Delete the tree's rows; its kept runs lose only their history. Returns the counts."""
    rows = {name: _delete_where(using, model, "run_id", tree.runs) for name, model in OWNED.items()}
    runs = WorkflowRun.objects.using(using)
    if len(tree.keep) == 2:  # a chain's head and tip: the tip continues straight from the head
        head, tip = tree.keep
        runs.filter(pk=tip).update(continued_from=None)
        deleted = _delete_where(using, WorkflowRun, "id", tree.gone)
        runs.filter(pk=tip).update(continued_from=head)
    else:
        deleted = _delete_where(using, WorkflowRun, "id", tree.gone)
    return rows, deleted


def _delete_where(using: str, model: type[Any], column: str, run_ids: list[Any]) -> int:
    """``DELETE ... WHERE column IN (...)`` in chunks. Raw SQL: Django's ``delete()`` would
    first load every event into memory, because signals point at events (SET_NULL)."""
    connection = connections[using]
    quote = internals.quoter(connection)
    prep = WorkflowRun._meta.pk.get_db_prep_value
    deleted = 0
    with connection.cursor() as cursor:
        for ids in _chunks(run_ids):
            marks = ", ".join(["%s"] * len(ids))
            cursor.execute(
                f"DELETE FROM {quote(model._meta.db_table)} WHERE {quote(column)} IN ({marks})",
                [prep(run_id, connection) for run_id in ids],
            )
            deleted += cursor.rowcount
    return deleted


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


# -- version rows ---------------------------------------------------------------------------


def collect_versions(older_than: dt.timedelta, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Delete the `WorkflowVersion` rows no worker registered within ``older_than`` and no
    live run is on (same workflow, version and code hash). Returns the rows, oldest first.

    Running workers refresh their rows every ``REDISPATCH_AFTER`` seconds, and a worker
    that starts registers again, so a collected row comes back when its code does.
    """
    using = app_settings().DATABASE
    live = (
        WorkflowRun.objects.using(using)
        .live()
        .filter(
            workflow_name=OuterRef("workflow_name"),
            workflow_version=OuterRef("version"),
            version_hash=OuterRef("version_hash"),
        )
    )
    unused = (
        WorkflowVersion.objects.using(using)
        .filter(last_seen__lt=Now() - older_than)
        .exclude(Exists(live))
        .order_by("last_seen", "id")
    )
    with transaction.atomic(using=using):
        # Locked, so that a worker registering meanwhile waits and then registers afresh.
        found = unused if dry_run else unused.select_for_update()
        rows = list(found.values("id", "workflow_name", "version", "version_hash", "last_seen"))
        if not dry_run and rows:
            unused.filter(pk__in=[row["id"] for row in rows]).delete()
    return [
        {key: value for key, value in row.items() if key != "id"}
        | {"last_seen": row["last_seen"].isoformat()}
        for row in rows
    ]


__all__ = [
    "PruneReport",
    "Tree",
    "collect_versions",
    "expired_condition",
    "expired_tips",
    "prune_runs",
    "tree_of",
]
