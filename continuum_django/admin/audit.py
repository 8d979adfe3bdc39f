"""The admin's audit trail: every operator action leaves a `LogEntry` on each run it touched.

The entries show on the run's HISTORY page with the user, the time and the reason given.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.admin.models import CHANGE, LogEntry
from django.http import HttpRequest

from .. import versions
from ..models import WorkflowRun
from ..redaction import redact_text


def message(action: str, reason: str = "") -> str:
    """What the log says: the action, and the operator's reason (redacted) when given."""
    reason = redact_text(reason.strip())
    return f"{action}. Reason: {reason}" if reason else f"{action}."


def log_runs(request: HttpRequest, runs: Iterable[WorkflowRun], text: str) -> None:
    """One CHANGE entry per run, by the request's user (Django's own `log_actions`)."""
    runs = list(runs)
    user_id = request.user.pk
    if runs and user_id is not None:  # the admin's views all need a logged-in user
        LogEntry.objects.log_actions(
            user_id=user_id, queryset=runs, action_flag=CHANGE, change_message=text
        )


def release(request: HttpRequest, pairs: Iterable[tuple[str, int]], reason: str = "") -> int:
    """Release the runs parked on these (workflow, version) pairs and log each one."""
    count = 0
    for name, version in sorted(set(pairs)):
        released = versions.release(name, version, by=f"{request.user} in the admin")
        text = message(f"Released from version {name} v{version}", reason)
        log_runs(request, WorkflowRun.objects.filter(pk__in=released), text)
        count += len(released)
    return count
