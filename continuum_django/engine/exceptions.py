"""The errors of continuum-django: one base class, picklable, with messages that say what to fix."""

from __future__ import annotations

from typing import Any


class ContinuumError(Exception):
    """Base class of every error this package raises."""

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in details.items():
            setattr(self, key, value)
        self._details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles exceptions; keep the keyword details across the trip.
        return (_rebuild, (type(self), self.message, self._details))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[ContinuumError], message: str, details: dict[str, Any]) -> ContinuumError:
    error = cls.__new__(cls)
    ContinuumError.__init__(error, message, **details)
    return error


class UnknownWorkflow(ContinuumError):
    """No workflow is registered under that name (and version)."""


class UnknownActivity(ContinuumError):
    """No activity is registered under that name."""


class RegistrationError(ContinuumError):
    """A workflow or activity definition is invalid or clashes with another."""


class RunNotFound(ContinuumError):
    """No run has that id."""


class RunNotActive(ContinuumError):
    """The run has already finished, so it cannot take a signal or a cancel."""


class PayloadError(ContinuumError):
    """A value cannot be journaled: not JSON-serialisable, or over the size limit."""


class ReplayDriftError(ContinuumError):
    """Replaying the history met a command different from the recorded one."""


class LeaseLost(ContinuumError):
    """The writer's lease on a run or activity task was taken over or expired."""


class ActivityFailed(ContinuumError):
    """An activity failed for good (retries exhausted or a non-retryable error)."""


class NonRetryableError(ContinuumError):
    """Raise from an activity to fail it at once, without further retries."""


class SignalTimeout(ContinuumError):
    """`wait_signal` timed out and no default was given."""


class WorkflowFailed(ContinuumError):
    """The run ended `failed`; `error` holds the recorded failure."""


class InvalidTimeout(ContinuumError, ValueError):
    """A run's ``timeout`` option is not a positive duration (seconds or a timedelta)."""


class WorkflowTimedOut(WorkflowFailed):
    """The run ended `failed` because it passed its deadline (``options(timeout=...)``);
    ``deadline`` is when that was (ISO 8601)."""


# The error type of a run the journal ended at its deadline (`WorkflowTimedOut`).
TIMED_OUT = "continuum.WorkflowTimedOut"


def run_failure(run_id: str, error: dict[str, Any]) -> WorkflowFailed:
    """The error `result()` raises for a run that ended failed with ``error``."""
    if error.get("type") == TIMED_OUT:
        return WorkflowTimedOut(
            f"run {run_id} timed out: {error.get('message', '')}",
            run_id=run_id,
            error=error,
            deadline=error.get("deadline"),
        )
    return WorkflowFailed(
        f"run {run_id} failed: {error.get('type', '?')}: {error.get('message', '')}",
        run_id=run_id,
        error=error,
    )


class WorkflowCancelled(ContinuumError):
    """The run ended `cancelled`."""


class ResultTimeout(ContinuumError, TimeoutError):
    """`result(timeout=...)` gave up before the run finished."""


class ChildFailed(ContinuumError):
    """A child workflow ended `failed`; raised in the parent where it waits for the child."""


class ChildCancelled(ChildFailed):
    """A child workflow ended `cancelled`."""


class SignalRejected(ContinuumError):
    """The signal was not delivered: the workflow's signal contract refuses its name or
    payload, or the run's mailbox already holds its limit of unread signals."""


def mailbox_full(run_id: str, name: str, limit: int) -> SignalRejected:
    """The error of a signal refused because run ``run_id`` holds ``limit`` unread ones."""
    return SignalRejected(
        f"run {run_id} already holds {limit} unread signals, its limit "
        f"(CONTINUUM['MAX_UNREAD_SIGNALS']); signal {name!r} was not delivered. The run "
        "takes them with ctx.wait_signal; retry once it has, or raise the limit",
        run_id=run_id,
        signal=name,
        limit=limit,
    )


class UpdateRejected(ContinuumError):
    """The update was refused: by its validator (nothing was stored) or by the workflow
    (``request.reject(reason)``); ``reason`` says why."""


class UpdateTimeout(ContinuumError, TimeoutError):
    """`update(..., timeout=...)` gave up before the workflow replied."""


class TransactionalActivityError(ContinuumError):
    """A transactional activity cannot run in the journal's transaction: it writes to
    another database than the journal's."""


class WorkflowUsageError(ContinuumError):
    """Workflow code used the engine in a way that cannot be replayed."""


class ContinueAsNew(BaseException):
    """Raised by `ctx.continue_as_new`: ends the run and starts its successor."""

    def __init__(self, input: dict[str, Any]) -> None:
        super().__init__("continue as new")
        self.input = input


class CancellationRequested(BaseException):
    """Delivered inside workflow code when the run is cancelled.

    A BaseException, so that ``except Exception`` in workflow code cannot swallow it.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason,))
