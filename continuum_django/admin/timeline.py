"""The visual timeline of a run: its activities, timers and waits as bars on a time axis.

Built from the history alone and rendered server-side as inline SVG (no script, no CDN).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from ..engine.events import EventType
from ..engine.updates import REPLY_EVENTS, UPDATE_PREFIX
from ..models import WorkflowEvent

WIDTH = 960
LABEL_WIDTH = 230
ROW = 22
TOP = 28
MAX_BARS = 300

# scheduling event -> (kind, the events that end it)
_SPANS = {
    EventType.ACTIVITY_SCHEDULED: (
        "activity",
        {EventType.ACTIVITY_COMPLETED: "completed", EventType.ACTIVITY_FAILED: "failed"},
    ),
    EventType.COMPENSATION_SCHEDULED: (
        "compensation",
        {EventType.COMPENSATION_COMPLETED: "completed", EventType.COMPENSATION_FAILED: "failed"},
    ),
    EventType.CHILD_STARTED: (
        "child",
        {
            EventType.CHILD_COMPLETED: "completed",
            EventType.CHILD_FAILED: "failed",
            EventType.CHILD_CANCELLED: "cancelled",
        },
    ),
    EventType.TIMER_SCHEDULED: (
        "timer",
        {EventType.TIMER_FIRED: "fired", EventType.SIGNAL_RECEIVED: "received"},
    ),
}


@dataclass(slots=True)
class Bar:
    label: str
    kind: str
    start: dt.datetime
    end: dt.datetime | None = None
    state: str = "open"
    detail: str = ""


def bars(events: Sequence[WorkflowEvent], now: dt.datetime, finished: bool) -> list[Bar]:
    """One bar per command with a duration, in the order the commands were made."""
    found: list[Bar] = []
    open_by_command: dict[str, Bar] = {}
    open_updates: dict[str, Bar] = {}  # by request id: from its receipt to its answer
    for event in events:
        payload = event.payload if isinstance(event.payload, dict) else {}
        if _update_event(event.type, payload):
            _update_bar(event, payload, found, open_updates)
        span = _SPANS.get(event.type)  # type: ignore[call-overload]
        if span is not None:
            kind, _ = span
            label = _label(event.type, event.command_id, payload)
            if kind == "timer" and "signal" in payload:
                kind = "signal"
            bar = Bar(label, kind, event.created_at, detail=f"seq {event.seq} {event.command_id}")
            found.append(bar)
            open_by_command[event.command_id] = bar
            continue
        bar_or_none = open_by_command.get(event.command_id)
        if bar_or_none is not None:
            ends = _SPANS[_start_type(bar_or_none.kind)][1]
            if event.type in ends:
                bar_or_none.end = event.created_at
                bar_or_none.state = ends[event.type]  # type: ignore[index]
                del open_by_command[event.command_id]
            continue
        if event.type == EventType.SIGNAL_RECEIVED and not _update_event(event.type, payload):
            # Waited without a timeout: no wait was journaled, only the signal taken.
            name = payload.get("name", "?")
            found.append(
                Bar(f"signal {name}", "signal", event.created_at, event.created_at, "received")
            )
        elif event.type == EventType.STATE_PUBLISHED:
            key = payload.get("key", "?")  # the value stays in the history (redacted there)
            found.append(
                Bar(f"publish {key}", "publish", event.created_at, event.created_at, "published")
            )
        elif event.type == EventType.CANCEL_REQUESTED:
            found.append(Bar("cancel requested", "cancel", event.created_at, event.created_at, ""))
        elif event.type == EventType.RUN_TIMED_OUT:
            found.append(Bar("deadline passed", "cancel", event.created_at, event.created_at, ""))
    if finished:
        for bar in [*open_by_command.values(), *open_updates.values()]:
            bar.state = "abandoned"
    return found


def _update_event(event_type: str, payload: dict[str, object]) -> bool:
    """Whether the event receives or answers an update request."""
    if event_type == EventType.SIGNAL_RECEIVED:
        return str(payload.get("name", "")).startswith(UPDATE_PREFIX)
    return event_type in REPLY_EVENTS


def _update_bar(
    event: WorkflowEvent, payload: dict[str, object], found: list[Bar], open_: dict[str, Bar]
) -> None:
    """Open the bar of an update request where it is taken; close it at its answer."""
    message = payload.get("payload")
    request = str(message.get("request_id", "?") if isinstance(message, dict) else "?")
    if event.type == EventType.SIGNAL_RECEIVED:
        name = str(payload.get("name", ""))[len(UPDATE_PREFIX) :]
        detail = f"seq {event.seq} request {request}"
        bar = Bar(f"update {name}", "update", event.created_at, detail=detail)
        found.append(bar)
        open_[request] = bar
        return
    answered = open_.pop(str(payload.get("request_id", "")), None)
    if answered is not None:
        answered.end = event.created_at
        answered.state = "replied" if event.type == EventType.UPDATE_REPLIED else "rejected"


def _start_type(kind: str) -> EventType:
    return {
        "activity": EventType.ACTIVITY_SCHEDULED,
        "compensation": EventType.COMPENSATION_SCHEDULED,
        "child": EventType.CHILD_STARTED,
        "timer": EventType.TIMER_SCHEDULED,
        "signal": EventType.TIMER_SCHEDULED,
    }[kind]


def _label(event_type: str, command_id: str, payload: dict[str, object]) -> str:
    if "activity" in payload:
        name = str(payload["activity"]).rsplit(".", 1)[-1]  # the full name is in the history
        return f"{name} (transactional)" if payload.get("transactional") else name
    if "signal" in payload:
        signal = str(payload["signal"])
        if signal.startswith(UPDATE_PREFIX):
            return f"update {signal[len(UPDATE_PREFIX) :]} (timeout)"
        return f"signal {signal} (timeout)"
    if event_type == EventType.TIMER_SCHEDULED:
        return f"sleep {payload.get('seconds', '?')}s"
    return command_id.split(":", 2)[-1] or str(event_type)


def duration_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def svg(events: Sequence[WorkflowEvent], now: dt.datetime, finished: bool) -> SafeString:
    """The run's timeline as an inline SVG element (empty string when there is nothing)."""
    if not events:
        return mark_safe("")
    all_bars = bars(events, now, finished)
    shown = all_bars[:MAX_BARS]
    start = events[0].created_at
    end = events[-1].created_at if finished else max(now, events[-1].created_at)
    span = max((end - start).total_seconds(), 0.001)
    axis = WIDTH - LABEL_WIDTH - 50  # room for the last tick's label

    def x(moment: dt.datetime) -> float:
        return LABEL_WIDTH + axis * (moment - start).total_seconds() / span

    rows = []
    for index, bar in enumerate(shown):
        y = TOP + index * ROW
        left = x(bar.start)
        right = x(bar.end or end)
        length = (bar.end or end) - bar.start
        title = f"{bar.label}: {bar.state}, {duration_text(length.total_seconds())} ({bar.detail})"
        rows.append(
            format_html(
                '<g class="cn-bar cn-{} cn-{}"><title>{}</title>'
                '<text x="4" y="{}">{}</text>'
                '<rect x="{}" y="{}" width="{}" height="{}" rx="2"></rect></g>',
                bar.kind,
                bar.state,
                title,
                f"{y + 14:.0f}",
                bar.label[:34],
                f"{left:.1f}",
                f"{y + 3:.0f}",
                f"{max(right - left, 3):.1f}",
                ROW - 6,
            )
        )
    ticks = format_html_join(
        "",
        '<line x1="{0}" x2="{0}" y1="18" y2="{1}" class="cn-tick"></line>'
        '<text x="{0}" y="12" class="cn-tick-label">+{2}</text>',
        (
            (
                f"{LABEL_WIDTH + axis * i / 4:.1f}",
                TOP + len(shown) * ROW,
                duration_text(span * i / 4),
            )
            for i in range(5)
        ),
    )
    more = ""
    if len(all_bars) > MAX_BARS:
        more = format_html(
            '<text x="4" y="{}">… {} more not drawn</text>',
            TOP + len(shown) * ROW + 16,
            len(all_bars) - MAX_BARS,
        )
    height = TOP + len(shown) * ROW + (24 if more else 8)
    return format_html(
        '<svg class="cn-timeline" role="img" aria-label="run timeline" '
        'xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}">'
        "{}{}{}</svg>",
        WIDTH,
        height,
        WIDTH,
        height,
        ticks,
        mark_safe("".join(rows)),  # each row is already escaped by format_html
        more,
    )
