"""Schedule specs: the slots of cron (in a time zone, across DST), intervals and one-shots,
and which due slots a sweep fires under each catch-up policy."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from continuum_django import At, Cron, Every, ScheduleError, workflow
from continuum_django.engine.exceptions import RegistrationError
from continuum_django.engine.schedules import plan, upcoming

UTC = dt.UTC
PARIS = ZoneInfo("Europe/Paris")


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


def test_cron_slots_are_read_in_the_time_zone() -> None:
    weekdays = Cron("0 9 * * MON-FRI", tz="Europe/Paris")
    # Friday 2026-01-02 10:00 Paris is past 9:00; the next slot is Monday 9:00 Paris (8:00 UTC).
    assert weekdays.after(utc(2026, 1, 2, 9, 0)) == utc(2026, 1, 5, 8, 0)
    assert upcoming(weekdays, utc(2026, 1, 5, 8, 0), 2) == [utc(2026, 1, 6, 8), utc(2026, 1, 7, 8)]


def test_a_slot_is_strictly_after_the_moment_given() -> None:
    hourly = Cron("0 * * * *")
    assert hourly.after(utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 11, 0)
    assert hourly.after(utc(2026, 1, 1, 9, 59, 59)) == utc(2026, 1, 1, 10, 0)


def test_spring_forward_fires_a_missing_local_time_once_after_the_gap() -> None:
    # 2026-03-29 02:30 does not exist in Paris (02:00 -> 03:00): it fires at 03:00 CEST.
    nightly = Cron("30 2 * * *", tz="Europe/Paris")
    slots = upcoming(nightly, utc(2026, 3, 27, 12), 3)
    assert [s.astimezone(PARIS).strftime("%d %H:%M") for s in slots] == [
        "28 02:30", "29 03:00", "30 02:30",
    ]  # fmt: skip


def test_fall_back_fires_a_repeated_local_time_once() -> None:
    # 2026-10-25 02:30 happens twice in Paris (03:00 CEST -> 02:00 CET): it fires once.
    nightly = Cron("30 2 * * *", tz="Europe/Paris")
    slots = upcoming(nightly, utc(2026, 10, 23, 12), 3)
    assert [s.astimezone(PARIS).strftime("%d %H:%M") for s in slots] == [
        "24 02:30", "25 02:30", "26 02:30",
    ]  # fmt: skip
    assert slots[1] == utc(2026, 10, 25, 0, 30)  # the first occurrence (CEST)


def test_an_hourly_cron_fires_in_both_halves_of_the_repeated_hour() -> None:
    half_hourly = Cron("*/30 * * * *", tz="Europe/Paris")
    slots = upcoming(half_hourly, utc(2026, 10, 24, 23, 50), 5)
    assert slots == [utc(2026, 10, 25, 0, 0) + dt.timedelta(minutes=30 * i) for i in range(5)]


def test_intervals_are_aligned_on_the_anchor() -> None:
    hourly = Every(dt.timedelta(hours=1))
    assert hourly.after(utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 11, 0)
    assert hourly.after(utc(2026, 1, 1, 10, 0, 1)) == utc(2026, 1, 1, 11, 0)
    offset = Every(90, anchor=utc(2026, 1, 1, 0, 0, 30))
    assert offset.after(utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 2, 0)


def test_a_one_shot_has_one_slot() -> None:
    once = At(utc(2026, 5, 1, 12))
    assert once.after(utc(2026, 5, 1, 11)) == utc(2026, 5, 1, 12)
    assert once.after(utc(2026, 5, 1, 12)) is None


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: Cron("61 * * * *"), "cron expression '61 * * * *'"),
        (lambda: Cron("* * *"), "cron expression '* * *'"),
        (lambda: Cron("* * * * *", tz="Mars/Olympus"), "time zone 'Mars/Olympus'"),
        (lambda: Cron("* * * * *", overlap="queue"), "overlap must be one of"),
        (lambda: Cron("* * * * *", catchup="some"), "catchup must be one of"),
        (lambda: Cron("* * * * *", catchup_window=dt.timedelta(0)), "catchup_window"),
        (lambda: Every(0.5), "at least 1 second"),
        (lambda: At(dt.datetime(2026, 1, 1)), "has no time zone"),
    ],
)
def test_bad_specs_are_refused_naming_what_was_wrong(make: object, named: str) -> None:
    with pytest.raises(ScheduleError, match=named.replace("*", r"\*")):
        make()  # type: ignore[operator]


def test_several_declared_schedules_need_names() -> None:
    with pytest.raises(RegistrationError, match="give each a name="):

        @workflow(name="tests.two_unnamed", schedule=[Cron("0 1 * * *"), Cron("0 2 * * *")])
        def two(ctx: object) -> None: ...

    with pytest.raises(RegistrationError, match="schedule_at"):

        @workflow(name="tests.declared_once", schedule=At(utc(2030, 1, 1)))
        def once(ctx: object) -> None: ...


HOURLY = Cron("0 * * * *")
GRACE = dt.timedelta(seconds=60)
NOW = utc(2026, 1, 1, 12, 0, 20)  # 20 s after the 12:00 slot; 11:00, 10:00 ... were missed


@pytest.mark.parametrize(
    ("catchup", "fired"),
    [
        ("all", [utc(2026, 1, 1, 10), utc(2026, 1, 1, 11), utc(2026, 1, 1, 12)]),
        ("last", [utc(2026, 1, 1, 12)]),
        ("none", [utc(2026, 1, 1, 12)]),
    ],
)
def test_catchup_with_an_on_time_slot(catchup: str, fired: list[dt.datetime]) -> None:
    window = dt.timedelta(hours=2, minutes=30)  # 9:00 is beyond it
    chosen = plan(
        HOURLY, utc(2026, 1, 1, 7), NOW, catchup=catchup, window=window, grace=GRACE, limit=100
    )
    assert chosen.fire == fired
    assert chosen.dropped == 6 - len(fired)  # 7:00 to 12:00
    assert chosen.resume_after == utc(2026, 1, 1, 12)


@pytest.mark.parametrize(
    ("catchup", "fired"),
    [("all", [utc(2026, 1, 1, 10), utc(2026, 1, 1, 11)]), ("last", [utc(2026, 1, 1, 11)]),
     ("none", [])],
)  # fmt: skip
def test_catchup_when_every_due_slot_was_missed(catchup: str, fired: list[dt.datetime]) -> None:
    now = utc(2026, 1, 1, 11, 30)
    chosen = plan(
        HOURLY, utc(2026, 1, 1, 10), now, catchup=catchup, window=None, grace=GRACE, limit=100
    )
    assert chosen.fire == fired


def test_a_long_backlog_continues_at_the_next_sweep() -> None:
    minutely = Cron("* * * * *")
    chosen = plan(
        minutely, utc(2026, 1, 1, 0), utc(2026, 1, 2), catchup="all", window=None, grace=GRACE,
        limit=10,
    )  # fmt: skip
    assert len(chosen.fire) == 10 and chosen.resume_after == utc(2026, 1, 1, 0, 9)


def test_a_late_one_shot_still_fires() -> None:
    once = At(utc(2026, 1, 1))
    chosen = plan(
        once, utc(2026, 1, 1), utc(2026, 3, 1), catchup="none", window=None, grace=GRACE, limit=5
    )
    assert chosen.fire == [utc(2026, 1, 1)]
