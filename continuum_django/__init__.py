"""continuum-django: durable workflows for Django, journaled in your database, driven by Celery."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine.context import ActivityHandle, ChildHandle, UpdateRequest, WorkflowContext
from .engine.definitions import activity, workflow
from .engine.events import Event
from .engine.exceptions import (
    ActivityFailed,
    CancellationRequested,
    ChildCancelled,
    ChildFailed,
    ContinuumError,
    InvalidTimeout,
    LeaseLost,
    NonRetryableError,
    PayloadError,
    ReplayDriftError,
    ResultTimeout,
    RunNotActive,
    RunNotFound,
    SignalRejected,
    SignalTimeout,
    TransactionalActivityError,
    UnknownActivity,
    UnknownWorkflow,
    UpdateRejected,
    UpdateTimeout,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowTimedOut,
)
from .engine.flow import FlowControlError
from .engine.retry import RetryPolicy
from .engine.runtime import ActivityContext
from .engine.schedules import At, Catchup, Cron, Every, Overlap, ScheduleError

if TYPE_CHECKING:
    from .client import (
        RunHandle,
        cancel,
        get_run,
        result,
        signal,
        signal_with_start,
        start,
        state,
    )
    from .operations import dead_letter, retry
    from .updates import update

_CLIENT = {
    "RunHandle",
    "start",
    "signal",
    "signal_with_start",
    "cancel",
    "result",
    "get_run",
    "state",
}
_OPERATIONS = {"retry", "dead_letter"}


def __getattr__(name: str) -> Any:
    # The client needs Django's models; load it only when asked, so that importing the
    # decorators (in workflows modules, at app-loading time) never touches the ORM.
    if name in _CLIENT:
        from . import client

        return getattr(client, name)
    if name == "update":
        from .updates import update

        return update
    if name in _OPERATIONS:
        from . import operations

        return getattr(operations, name)
    raise AttributeError(f"module 'continuum_django' has no attribute {name!r}")


__all__ = [
    "ActivityContext",
    "ActivityFailed",
    "ActivityHandle",
    "At",
    "CancellationRequested",
    "Catchup",
    "ChildCancelled",
    "ChildFailed",
    "ChildHandle",
    "ContinuumError",
    "Cron",
    "Event",
    "Every",
    "FlowControlError",
    "InvalidTimeout",
    "LeaseLost",
    "NonRetryableError",
    "Overlap",
    "PayloadError",
    "ReplayDriftError",
    "ResultTimeout",
    "RetryPolicy",
    "RunHandle",
    "RunNotActive",
    "RunNotFound",
    "ScheduleError",
    "SignalRejected",
    "SignalTimeout",
    "TransactionalActivityError",
    "UnknownActivity",
    "UnknownWorkflow",
    "UpdateRejected",
    "UpdateRequest",
    "UpdateTimeout",
    "WorkflowCancelled",
    "WorkflowContext",
    "WorkflowFailed",
    "WorkflowTimedOut",
    "activity",
    "cancel",
    "dead_letter",
    "get_run",
    "result",
    "retry",
    "signal",
    "signal_with_start",
    "start",
    "state",
    "update",
    "workflow",
]
