"""The journal vocabulary: event types and the `Event` value every history is made of."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    RUN_STARTED = "run_started"
    ACTIVITY_SCHEDULED = "activity_scheduled"
    ACTIVITY_COMPLETED = "activity_completed"
    ACTIVITY_FAILED = "activity_failed"
    TIMER_SCHEDULED = "timer_scheduled"
    TIMER_FIRED = "timer_fired"
    SIGNAL_RECEIVED = "signal_received"
    SIDE_EFFECT = "side_effect"
    PATCH_MARKER = "patch_marker"
    CHILD_STARTED = "child_started"
    CHILD_COMPLETED = "child_completed"
    CHILD_FAILED = "child_failed"
    CHILD_CANCELLED = "child_cancelled"
    COMPENSATION_SCHEDULED = "compensation_scheduled"
    COMPENSATION_COMPLETED = "compensation_completed"
    COMPENSATION_FAILED = "compensation_failed"
    CANCEL_REQUESTED = "cancel_requested"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    RUN_CONTINUED = "run_continued"
    # The run passed its deadline (`options(timeout=...)`); the journal, not the workflow
    # code, wrote it, and the run's ``run_failed`` (a `WorkflowTimedOut`) follows it.
    RUN_TIMED_OUT = "run_timed_out"
    # An operator reopened a failed run at this failed activity: its earlier outcome (and
    # the run's failure) no longer count; the activity's next outcome does.
    ACTIVITY_RETRY_SCHEDULED = "activity_retry_scheduled"
    # The workflow published a value under a key (`WorkflowContext.publish`): the run's
    # published state is the last value of each key.
    STATE_PUBLISHED = "state_published"
    # The workflow's answer to an update request (which arrives as a ``signal_received``).
    UPDATE_REPLIED = "update_replied"
    UPDATE_REJECTED = "update_rejected"


# Events written by the workflow's own activations; their command ids must match on replay.
COMMAND_EVENTS = frozenset(
    {
        EventType.ACTIVITY_SCHEDULED,
        EventType.TIMER_SCHEDULED,
        EventType.SIDE_EFFECT,
        EventType.PATCH_MARKER,
        EventType.CHILD_STARTED,
        EventType.COMPENSATION_SCHEDULED,
        EventType.STATE_PUBLISHED,
        EventType.UPDATE_REPLIED,
        EventType.UPDATE_REJECTED,
    }
)

TERMINAL_EVENTS = frozenset(
    {
        EventType.RUN_COMPLETED,
        EventType.RUN_FAILED,
        EventType.RUN_CANCELLED,
        EventType.RUN_CONTINUED,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One journaled event of a run, as stored and as golden-history files hold it."""

    seq: int
    type: str
    command_id: str = ""
    payload: Any = None
    created_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": str(self.type),
            "command_id": self.command_id,
            "payload": self.payload,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        created = data.get("created_at")
        return cls(
            seq=data["seq"],
            type=data["type"],
            command_id=data.get("command_id", ""),
            payload=data.get("payload"),
            created_at=dt.datetime.fromisoformat(created) if created else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event an activation wants appended; the journal assigns its seq and time."""

    type: str
    command_id: str = ""
    payload: Any = None
