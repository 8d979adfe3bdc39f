"""Schedules as rows: create, pause, resume, trigger, delete, sync from code, fire due slots.

Firing a slot is one transaction: lock the schedule row (``skip_locked``: another sweep
has it), start the run through `client.start` with the idempotency key
``schedule:<name>:<slot>``, and advance ``next_fire_at``. A sweep killed before its
commit fired nothing; one killed after it fired the slot and moved on; and were the row
ever read stale, the key still returns the run already started. So each slot starts one
run, across any number of sweeping workers and beats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from django.db import connections, transaction
from django.db.models import Q

from . import client
from .conf import app_settings
from .engine import codec
from .engine.definitions import Registry, WorkflowDefinition, bind_arguments
from .engine.definitions import registry as default_registry
from .engine.exceptions import RunNotActive
from .engine.local import new_run
from .engine.schedules import At, Cron, Every, Overlap, ScheduleError, Spec, plan, upcoming
from .models import Schedule, ScheduleKind, WorkflowRun

logger = logging.getLogger("continuum")

# How many slots of one schedule a sweep looks at; a longer backlog (catch-up "all" after
# a long stop) continues at the next sweep.
MAX_SLOTS_PER_SWEEP = 100
REMOVED_FROM_CODE = "removed from code"


def spec_of(schedule: Schedule) -> Spec:
    """The `Cron`, `Every` or `At` a row stands for (policies included)."""
    policy: dict[str, Any] = {
        "name": schedule.name,
        "overlap": schedule.overlap,
        "catchup": schedule.catchup,
        "catchup_window": schedule.catchup_window,
    }
    if schedule.kind == ScheduleKind.CRON:
        return Cron(schedule.cron, tz=schedule.timezone, **policy)
    if schedule.kind == ScheduleKind.INTERVAL:
        assert schedule.interval is not None and schedule.start_at is not None
        return Every(schedule.interval, anchor=schedule.start_at, **policy)
    assert schedule.start_at is not None
    return At(schedule.start_at, **policy)


def spec_fields(spec: Spec) -> dict[str, Any]:
    """The row's fields for ``spec``: its kind, its times and its policies."""
    fields: dict[str, Any] = {
        "kind": spec.kind,
        "cron": "",
        "timezone": "UTC",
        "interval": None,
        "start_at": None,
        "overlap": str(spec.overlap),
        "catchup": str(spec.catchup),
        "catchup_window": spec.catchup_window,
    }
    if isinstance(spec, Cron):
        fields.update(cron=spec.expression, timezone=spec.tz)
    elif isinstance(spec, Every):
        fields.update(interval=spec.interval, start_at=spec.anchor)
    else:
        fields.update(start_at=spec.when)
    return fields


def describe(schedule: Schedule) -> str:
    return spec_of(schedule).describe()


def next_fire_times(schedule: Schedule, count: int = 5) -> list[dt.datetime]:
    """The next ``count`` slots from ``next_fire_at`` on (none when paused or done)."""
    if schedule.paused or schedule.next_fire_at is None:
        return []
    first = schedule.next_fire_at
    return [first, *upcoming(spec_of(schedule), first, count - 1)]


def database_now() -> dt.datetime:
    """The journal database's clock, which decides when a slot is due."""
    connection = connections[app_settings().DATABASE]
    # The time of this statement, not of the transaction's start (Postgres' CURRENT_TIMESTAMP).
    clock = "clock_timestamp()" if connection.vendor == "postgresql" else "CURRENT_TIMESTAMP"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {clock}")
        (value,) = cursor.fetchone()
    if isinstance(value, str):  # SQLite answers with text, in UTC
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _objects() -> Any:
    return Schedule.objects.using(app_settings().DATABASE)


def _definition(workflow: WorkflowDefinition[..., Any] | str) -> WorkflowDefinition[..., Any]:
    if isinstance(workflow, WorkflowDefinition):
        return workflow
    return default_registry.workflow(workflow)


def _input(
    definition: WorkflowDefinition[..., Any], args: Iterable[Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The workflow's arguments, checked against its signature and encoded as a run's are.
    (Not the Celery app: ``migrate`` syncs declared schedules where none may be set up.)"""
    bind_arguments(definition, list(args), kwargs)
    conf = app_settings()
    return new_run(
        definition,
        list(args),
        kwargs,
        max_payload_bytes=conf.MAX_PAYLOAD_BYTES,
        max_payload_depth=conf.max_payload_depth,
    ).input


def _check_name(name: Any) -> str:
    limit = client._max_length(Schedule, "name")
    try:
        return client.check_text(name, "schedule name", max_length=limit)
    except ValueError as exc:
        raise ScheduleError(str(exc)) from None


def create(
    workflow: WorkflowDefinition[..., Any] | str,
    spec: Spec,
    *,
    name: str | None = None,
    namespace: str = "default",
    paused: bool = False,
) -> Schedule:
    """Create a schedule at run time (``name`` defaults to ``spec.name``); sync from code
    leaves it alone. Raises `ScheduleError` when the name is taken or anything is malformed."""
    if not isinstance(spec, Cron | Every | At):
        raise ScheduleError(f"a schedule spec is a Cron, Every or At, not {spec!r}")
    definition = _definition(workflow)
    if name is None and spec.name is None:
        raise ScheduleError(
            "a schedule needs a name: pass name=..., or give the spec one (Cron(..., name=...))"
        )
    schedule_name = _check_name(name if name is not None else spec.name)
    client.check_start_options(namespace=namespace)
    row = Schedule(
        name=schedule_name,
        workflow_name=definition.name,
        namespace=namespace,
        input=_input(definition, spec.args, spec.kwargs),
        paused=paused,
        **spec_fields(spec),
    )
    using = app_settings().DATABASE
    with transaction.atomic(using=using):
        if _objects().filter(name=schedule_name).exists():
            raise ScheduleError(
                f"a schedule named {schedule_name!r} already exists; pick another name, or "
                "edit or delete that one",
                name=schedule_name,
            )
        row.next_fire_at = first_slot(spec)
        row.save(using=using)
    return row


# A slot at the very instant of creation still counts as upcoming.
_just_before = dt.timedelta(microseconds=1)


def first_slot(spec: Spec) -> dt.datetime | None:
    """The first slot of a new (or re-specified) schedule: from now on, or a one-shot's
    time even when it has passed (it then fires at the next sweep)."""
    if isinstance(spec, At):
        return spec.when
    return spec.after(database_now() - _just_before)


def schedule_at(
    workflow: WorkflowDefinition[..., Any] | str,
    when: dt.datetime,
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    namespace: str = "default",
) -> Schedule:
    """A one-shot schedule: start ``workflow`` once, at ``when`` (or at the next sweep when
    ``when`` has passed). Its row stays, with the run it started, until deleted."""
    definition = _definition(workflow)
    spec = At(when, args=tuple(args), kwargs=dict(kwargs or {}))
    default = f"{definition.name}@{spec.when.isoformat()}#{uuid.uuid4().hex[:8]}"
    return create(definition, spec, name=name or default, namespace=namespace)


def get(name: str) -> Schedule:
    row: Schedule | None = _objects().filter(name=name).first()
    if row is None:
        raise ScheduleError(f"no schedule is named {name!r}", name=name)
    return row


def pause(name: str, note: str = "") -> Schedule:
    """Stop firing; slots passing while paused are not fired later."""
    row = get(name)
    row.paused = True
    row.pause_note = note[:255]
    row.save(update_fields=["paused", "pause_note", "updated_at"])
    return row


def resume(name: str) -> Schedule:
    """Fire again from the first slot after now (what passed while paused is skipped)."""
    with transaction.atomic(using=app_settings().DATABASE):
        row = _objects().select_for_update().filter(name=name).first()
        if row is None:
            raise ScheduleError(f"no schedule is named {name!r}", name=name)
        row.paused = False
        row.pause_note = ""
        # An unfired one-shot keeps its time: passed while paused, it fires at the next sweep.
        if row.kind != ScheduleKind.ONCE:
            row.next_fire_at = spec_of(row).after(database_now() - _just_before)
        row.save(update_fields=["paused", "pause_note", "next_fire_at", "updated_at"])
    return row


def reschedule(row: Schedule) -> None:
    """After an edit of its spec: the next slot from now on (not saved). A one-shot that
    already fired at its time stays done."""
    fired = row.kind == ScheduleKind.ONCE and row.last_slot and row.last_slot == row.start_at
    row.next_fire_at = None if fired else first_slot(spec_of(row))
    row.buffered_slot = None


def delete(name: str) -> None:
    """Delete the schedule; the runs it started stay."""
    if not _objects().filter(name=name).delete()[0]:
        raise ScheduleError(f"no schedule is named {name!r}", name=name)


def trigger(name: str) -> client.RunHandle:
    """Start a run now, outside the spec's slots ("trigger now"): once per call, whatever
    the overlap policy, except that ``cancel_previous`` still cancels the live previous run."""
    with transaction.atomic(using=app_settings().DATABASE):
        row = _objects().select_for_update().filter(name=name).first()
        if row is None:
            raise ScheduleError(f"no schedule is named {name!r}", name=name)
        now = database_now()
        if row.overlap == Overlap.CANCEL_PREVIOUS:
            _cancel_previous(row, f"schedule {row.name!r} was triggered")
        handle = _start(row, now, key=f"schedule:{row.name}:trigger:{now.isoformat()}")
        row.save(update_fields=["last_run_id", "last_fired_at", "fired_count", "updated_at"])
    return handle


# -- firing ----------------------------------------------------------------------------


def due(now: dt.datetime) -> Any:
    """Unpaused schedules with a slot due or a buffered slot."""
    return _objects().filter(
        Q(paused=False, next_fire_at__isnull=False, next_fire_at__lte=now)
        | Q(paused=False, buffered_slot__isnull=False)
    )


def fire_due(now: dt.datetime | None = None, limit: int = 100) -> dict[str, int]:
    """Fire the due slots of up to ``limit`` schedules, each in its own transaction.
    ``now`` defaults to the database's clock. Returns the runs started and slots dropped."""
    now = now or database_now()
    counts = {"schedules_fired": 0, "schedule_slots_dropped": 0}
    # Two queries, each an index range scan even in a generic (prepared) plan: an OR of
    # both would make Postgres scan every idle schedule once its plan is cached.
    unpaused = _objects().filter(paused=False)
    slots = unpaused.filter(next_fire_at__isnull=False, next_fire_at__lte=now)
    buffered = unpaused.filter(buffered_slot__isnull=False)
    ids = list(slots.order_by("next_fire_at").values_list("pk", flat=True)[:limit])
    ids += [pk for pk in buffered.values_list("pk", flat=True)[:limit] if pk not in ids]
    for pk in ids:
        try:
            fired, dropped = _fire_one(pk, now)
        except Exception:
            # Its transaction rolled back: the slot stays due. One broken schedule (its
            # workflow gone from this code, arguments its signature no longer takes) must
            # not stop the others, nor the rest of the sweep.
            logger.exception("firing schedule %s; it is retried at the next sweep", pk)
            continue
        counts["schedules_fired"] += fired
        counts["schedule_slots_dropped"] += dropped
    return counts


def _fire_one(pk: int, now: dt.datetime) -> tuple[int, int]:
    with transaction.atomic(using=app_settings().DATABASE):
        # Re-read under the lock: a sweep that fired it meanwhile has moved it past now.
        row = due(now).select_for_update(skip_locked=True).filter(pk=pk).first()
        if row is None:
            return 0, 0
        fired = dropped = 0
        if row.buffered_slot is not None and not _previous_live(row):
            _start(row, row.buffered_slot)
            row.buffered_slot = None
            fired += 1
        if row.next_fire_at is not None and row.next_fire_at <= now:
            spec = spec_of(row)
            grace = app_settings().schedule_grace
            chosen = plan(
                spec,
                row.next_fire_at,
                now,
                catchup=row.catchup,
                window=row.catchup_window,
                grace=grace,
                limit=MAX_SLOTS_PER_SWEEP,
            )
            dropped += chosen.dropped
            for slot in chosen.fire:
                outcome = _fire_slot(row, slot)
                fired += outcome == "started"
                dropped += outcome == "dropped"
            row.last_slot = chosen.resume_after
            row.next_fire_at = spec.after(chosen.resume_after)
        row.dropped_count += dropped
        row.save(
            update_fields=[
                "next_fire_at", "buffered_slot", "last_slot", "last_run_id", "last_fired_at",
                "fired_count", "dropped_count", "updated_at",
            ]
        )  # fmt: skip
        return fired, dropped


def _fire_slot(row: Schedule, slot: dt.datetime) -> str:
    """Start the slot's run as the overlap policy says: "started", "buffered" (it starts
    when the previous run ends) or "dropped"."""
    if row.overlap == Overlap.ALLOW or not _previous_live(row):
        _start(row, slot)
        return "started"
    if row.overlap == Overlap.SKIP:
        return "dropped"
    if row.overlap == Overlap.BUFFER_ONE:
        if row.buffered_slot is not None:
            return "dropped"
        row.buffered_slot = slot
        return "buffered"
    _cancel_previous(row, f"schedule {row.name!r} started its slot {slot.isoformat()}")
    _start(row, slot)
    return "started"


def _previous_live(row: Schedule) -> bool:
    if row.last_run_id is None:
        return False
    runs = WorkflowRun.objects.using(app_settings().DATABASE)
    # A run that continued as new lives on in its chain.
    return bool(
        runs.filter(Q(pk=row.last_run_id) | Q(chain_root_id=row.last_run_id)).live().exists()
    )


def _cancel_previous(row: Schedule, reason: str) -> None:
    if row.last_run_id is None or not _previous_live(row):
        return
    with contextlib.suppress(RunNotActive):  # it ended meanwhile
        client.cancel(row.last_run_id, reason=reason)


def _start(row: Schedule, slot: dt.datetime, key: str | None = None) -> client.RunHandle:
    slot_text = slot.astimezone(dt.UTC).isoformat()
    handle = client.start(
        row.workflow_name,
        args=codec.decode(row.input.get("args", [])),
        kwargs=codec.decode(row.input.get("kwargs", {})),
        idempotency_key=key or f"schedule:{row.name}:{slot_text}",
        namespace=row.namespace,
        attributes={"schedule": row.name, "slot": slot_text},
    )
    row.last_run_id = uuid.UUID(handle.id)
    row.last_fired_at = slot
    row.fired_count += 1
    return handle


# -- declared in code ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SyncReport:
    created: list[str]
    updated: list[str]
    paused: list[str]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def declared_specs(registry: Registry = default_registry) -> dict[str, tuple[str, Spec]]:
    """The schedules this code declares (``@workflow(schedule=...)``), by name."""
    found: dict[str, tuple[str, Spec]] = {}
    for (name, _version), definition in sorted(registry.workflows.items()):
        for spec in definition.schedules:
            found[spec.name or name] = (name, spec)
    return found


def sync_declared(registry: Registry = default_registry) -> SyncReport:
    """Make the rows match the schedules declared in code (run on ``migrate``, like a
    deploy, and by ``continuum_schedules sync``).

    A new declaration creates its row; a changed one updates the spec, arguments and
    policies (and the next slot when the spec changed) but never un-pauses what an
    operator paused. A declared row whose declaration is gone is paused with the note
    "removed from code" (not deleted: an operator deletes it), and is resumed if the
    declaration comes back. Schedules created at run time are left alone.
    """
    created: list[str] = []
    updated: list[str] = []
    paused: list[str] = []
    declared = declared_specs(registry)
    with transaction.atomic(using=app_settings().DATABASE):
        rows = {row.name: row for row in _objects().select_for_update().filter(declared=True)}
        taken = set(
            _objects()
            .filter(name__in=list(declared), declared=False)
            .values_list("name", flat=True)
        )
        for name, (workflow_name, spec) in declared.items():
            if name in taken:
                logger.warning(
                    "schedule %r is declared in code but a schedule created at run time has "
                    "that name; the declared one is not synced until that one is deleted",
                    name,
                )
                continue
            definition = registry.workflow(workflow_name)
            values = {
                "workflow_name": workflow_name,
                "input": _input(definition, spec.args, spec.kwargs),
                **spec_fields(spec),
            }
            row = rows.get(name)
            if row is None:
                row = Schedule(name=name, declared=True, **values)
                row.next_fire_at = first_slot(spec)
                row.save(using=app_settings().DATABASE)
                created.append(name)
                continue
            changed = {k: v for k, v in values.items() if getattr(row, k) != v}
            if row.paused and row.pause_note == REMOVED_FROM_CODE:
                row.paused, row.pause_note = False, ""
                changed["paused"] = False
            if changed:
                for key, value in changed.items():
                    setattr(row, key, value)
                if set(changed) & {"kind", "cron", "timezone", "interval", "start_at", "paused"}:
                    reschedule(row)
                row.save()
                updated.append(name)
        for name, row in rows.items():
            if name not in declared and not row.paused:
                row.paused, row.pause_note = True, REMOVED_FROM_CODE
                row.save(update_fields=["paused", "pause_note", "updated_at"])
                paused.append(name)
    return SyncReport(created=created, updated=updated, paused=paused)


__all__ = [
    "At",
    "Cron",
    "Every",
    "ScheduleError",
    "SyncReport",
    "create",
    "delete",
    "fire_due",
    "get",
    "next_fire_times",
    "pause",
    "resume",
    "schedule_at",
    "sync_declared",
    "trigger",
]
