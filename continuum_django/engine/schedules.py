"""When a workflow starts by itself: cron in a time zone, every interval, once at a time.

Pure values and slot arithmetic (no database): `Cron`, `Every` and `At` say which
instants are *slots*; the Django side (`continuum_django.schedules`) fires each slot once.
Cron expressions are parsed by `cronsim`, which follows Debian cron on daylight-saving
changes: a wall-clock time that does not exist (spring forward) fires at the first
instant after the gap; a wall-clock time that occurs twice (fall back) fires once, at its
first occurrence; expressions that fire every hour or more often (``*`` in the hour
field) fire by the clock through both halves of a repeated hour.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .exceptions import ContinuumError

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
DEFAULT_CATCHUP_WINDOW = dt.timedelta(days=1)


class ScheduleError(ContinuumError, ValueError):
    """A schedule is malformed (bad cron, unknown time zone, ...) or does not exist."""


class Overlap(StrEnum):
    """What a slot does while the schedule's previous run is still live."""

    SKIP = "skip"  # drop the slot
    BUFFER_ONE = "buffer_one"  # start it when the previous run ends (one is kept, later dropped)
    ALLOW = "allow"  # start it anyway
    CANCEL_PREVIOUS = "cancel_previous"  # cancel the previous run, then start it


class Catchup(StrEnum):
    """Which slots missed while nothing swept (late by more than the grace) still fire."""

    ALL = "all"
    LAST = "last"
    NONE = "none"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Paris' or 'UTC'",
            tz=name,
        ) from None


def aware(moment: Any, what: str) -> dt.datetime:
    if not isinstance(moment, dt.datetime):
        raise ScheduleError(f"{what} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ScheduleError(
            f"{what} {moment.isoformat()} has no time zone; give an aware datetime "
            "(for example with tzinfo=datetime.UTC or django.utils.timezone.now())"
        )
    return moment.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What every schedule kind shares: its name, the workflow's arguments and the policies.

    ``name`` defaults to the workflow's name when declared with ``@workflow(schedule=...)``.
    ``catchup_window`` bounds how far back missed slots are fired (None: no bound).
    """

    name: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    overlap: Overlap | str = Overlap.SKIP
    catchup: Catchup | str = Catchup.LAST
    catchup_window: dt.timedelta | None = DEFAULT_CATCHUP_WINDOW

    def check_policies(self) -> None:
        try:
            Overlap(self.overlap)
        except ValueError:
            raise ScheduleError(
                f"overlap must be one of {', '.join(o.value for o in Overlap)}, "
                f"not {self.overlap!r}"
            ) from None
        try:
            Catchup(self.catchup)
        except ValueError:
            raise ScheduleError(
                f"catchup must be one of {', '.join(c.value for c in Catchup)}, "
                f"not {self.catchup!r}"
            ) from None
        window = self.catchup_window
        if window is not None and (
            not isinstance(window, dt.timedelta) or window <= dt.timedelta(0)
        ):
            raise ScheduleError(
                f"catchup_window must be a positive timedelta or None, not {window!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Cron(Policy):
    """Slots of a cron expression (5 fields, or 6 with seconds) read in the time zone ``tz``."""

    expression: str
    tz: str = "UTC"

    def __init__(self, expression: str, *, tz: str | ZoneInfo = "UTC", **policy: Any) -> None:
        if isinstance(tz, ZoneInfo):
            tz = tz.key
        _init(self, policy, expression=expression, tz=tz)
        if not isinstance(expression, str) or not expression.strip():
            raise ScheduleError(f"a cron expression must be a non-empty str, not {expression!r}")
        zone(tz)
        try:
            CronSim(expression, EPOCH)
        except CronSimError as exc:
            raise ScheduleError(
                f"cron expression {expression!r} is not valid: {exc}", expression=expression
            ) from None

    kind = "cron"

    def after(self, moment: dt.datetime) -> dt.datetime | None:
        start = moment.astimezone(zone(self.tz))
        try:
            found = next(CronSim(self.expression, start))
        except StopIteration:
            return None
        return found.astimezone(dt.UTC)

    def describe(self) -> str:
        return f"cron {self.expression} ({self.tz})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Every(Policy):
    """A slot every ``interval``, aligned on ``anchor`` (default the Unix epoch, UTC), so
    ``Every(timedelta(hours=1))`` fires on the hour whichever process computes it."""

    interval: dt.timedelta
    anchor: dt.datetime = EPOCH

    def __init__(
        self, interval: dt.timedelta | float, *, anchor: dt.datetime = EPOCH, **policy: Any
    ) -> None:
        if isinstance(interval, int | float) and not isinstance(interval, bool):
            interval = dt.timedelta(seconds=interval)
        if not isinstance(interval, dt.timedelta) or interval < dt.timedelta(seconds=1):
            raise ScheduleError(
                f"an interval must be a timedelta (or seconds) of at least 1 second, "
                f"not {interval!r}"
            )
        _init(self, policy, interval=interval, anchor=aware(anchor, "anchor"))

    kind = "interval"

    def after(self, moment: dt.datetime) -> dt.datetime | None:
        steps = (moment - self.anchor) // self.interval + 1
        return self.anchor + steps * self.interval

    def describe(self) -> str:
        return f"every {self.interval}"


@dataclass(frozen=True, slots=True, kw_only=True)
class At(Policy):
    """One slot, at ``when`` (an aware datetime): a one-shot schedule."""

    when: dt.datetime

    def __init__(self, when: dt.datetime, **policy: Any) -> None:
        _init(self, policy, when=aware(when, "the time of a one-shot schedule"))

    kind = "once"

    def after(self, moment: dt.datetime) -> dt.datetime | None:
        return self.when if self.when > moment else None

    def describe(self) -> str:
        return f"once at {self.when.isoformat()}"


Spec = Cron | Every | At


def _init(spec: Policy, policy: dict[str, Any], **own: Any) -> None:
    known = {f.name: f for f in fields(Policy)}
    unknown = sorted(set(policy) - set(known))
    if unknown:
        raise TypeError(
            f"{type(spec).__name__}() got unknown options {unknown}; known: {', '.join(known)}"
        )
    for name, spec_field in known.items():
        if name in policy:
            value = policy[name]
        elif spec_field.default_factory is not MISSING:
            value = spec_field.default_factory()
        else:
            value = spec_field.default
        object.__setattr__(spec, name, value)
    object.__setattr__(spec, "args", tuple(spec.args))
    object.__setattr__(spec, "kwargs", dict(spec.kwargs))
    for name, value in own.items():
        object.__setattr__(spec, name, value)
    spec.check_policies()


def slots(spec: Spec, after: dt.datetime, until: dt.datetime, limit: int) -> Iterator[dt.datetime]:
    """The slots of ``spec`` in ``(after, until]``, in order, at most ``limit`` of them."""
    moment = after
    for _ in range(limit):
        found = spec.after(moment)
        if found is None or found > until:
            return
        yield found
        moment = found


def upcoming(spec: Spec, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` slots strictly after ``after``."""
    found: list[dt.datetime] = []
    moment = after
    while len(found) < count:
        slot = spec.after(moment)
        if slot is None:
            break
        found.append(slot)
        moment = slot
    return found


@dataclass(frozen=True, slots=True)
class Plan:
    """What a sweep does with the due slots of one schedule."""

    fire: list[dt.datetime]
    dropped: int
    resume_after: dt.datetime  # the slots after this one are the schedule's future


def plan(
    spec: Spec,
    next_slot: dt.datetime,
    now: dt.datetime,
    *,
    catchup: Catchup | str,
    window: dt.timedelta | None,
    grace: dt.timedelta,
    limit: int,
) -> Plan:
    """Which due slots (``next_slot`` up to ``now``) fire, and how many are dropped.

    A slot found within ``grace`` of its time is on time and always fires. Older slots
    were missed (nothing swept then): ``all`` fires each one not older than ``window``,
    ``last`` only the newest of them (and none when an on-time slot exists), ``none`` none.
    At most ``limit`` slots are looked at; the rest wait for the next sweep. A one-shot
    schedule's slot always fires, however late.
    """
    due = [next_slot, *slots(spec, next_slot, now, limit - 1)] if next_slot <= now else []
    if isinstance(spec, At):
        return Plan(fire=due, dropped=0, resume_after=due[-1] if due else next_slot)
    on_time = [s for s in due if now - s <= grace]
    missed = [s for s in due if now - s > grace and (window is None or now - s <= window)]
    chosen: list[dt.datetime]
    if catchup == Catchup.ALL:
        chosen = missed
    elif catchup == Catchup.LAST and not on_time:
        chosen = missed[-1:]
    else:
        chosen = []
    fire = chosen + on_time
    resume = due[-1] if due else next_slot
    return Plan(fire=fire, dropped=len(due) - len(fire), resume_after=resume)
