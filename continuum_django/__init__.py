"""continuum-django: durable workflows for Django, journaled in your database, driven by Celery."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine.context import ActivityHandle, ChildHandle, WorkflowContext
from .engine.definitions import activity, workflow
from .engine.events import Event
from .engine.exceptions import (
    ActivityFailed,
    CancellationRequested,
    ChildCancelled,
    ChildFailed,
    ContinuumError,
    LeaseLost,
    NonRetryableError,
    PayloadError,
    ReplayDriftError,
    ResultTimeout,
    RunNotActive,
    RunNotFound,
    SignalRejected,
    SignalTimeout,
    UnknownActivity,
    UnknownWorkflow,
    WorkflowCancelled,
    WorkflowFailed,
)
from .engine.flow import FlowControlError
from .engine.retry import RetryPolicy
from .engine.runtime import ActivityContext

if TYPE_CHECKING:
    from .client import RunHandle, cancel, get_run, result, signal, start
    from .operations import dead_letter, retry

_CLIENT = {"RunHandle", "start", "signal", "cancel", "result", "get_run"}
_OPERATIONS = {"retry", "dead_letter"}


def __getattr__(name: str) -> Any:
    # The client needs Django's models; load it only when asked, so that importing the
    # decorators (in workflows modules, at app-loading time) never touches the ORM.
    if name in _CLIENT:
        from . import client

        return getattr(client, name)
    if name in _OPERATIONS:
        from . import operations

        return getattr(operations, name)
    raise AttributeError(f"module 'continuum_django' has no attribute {name!r}")


__all__ = [
    "ActivityContext",
    "ActivityFailed",
    "ActivityHandle",
    "CancellationRequested",
    "ChildCancelled",
    "ChildFailed",
    "ChildHandle",
    "ContinuumError",
    "Event",
    "FlowControlError",
    "LeaseLost",
    "NonRetryableError",
    "PayloadError",
    "ReplayDriftError",
    "ResultTimeout",
    "RetryPolicy",
    "RunHandle",
    "RunNotActive",
    "RunNotFound",
    "SignalRejected",
    "SignalTimeout",
    "UnknownActivity",
    "UnknownWorkflow",
    "WorkflowCancelled",
    "WorkflowContext",
    "WorkflowFailed",
    "activity",
    "cancel",
    "dead_letter",
    "get_run",
    "result",
    "retry",
    "signal",
    "start",
    "workflow",
]
