"""What the runtime tells an observer about its work: the hooks behind Django signals,
traces and metrics. Pure: the default observer does nothing, and hosts subclass it."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from .journal import ActivityClaim, RunClaim
from .replay import Activation


class Observer:
    """Called by `Runtime` around and after its durable steps. Every ``*ed`` hook runs after
    the write it reports has committed; the context managers wrap the work itself (an
    advance task, an activity attempt), so a tracer can open a span around it. Hooks must
    not raise: the runtime logs and ignores what they raise."""

    def advancing(self, run_id: str, started: dict[str, Any] | None) -> AbstractContextManager[Any]:
        """Wraps one ``advance_run`` task (with the steps it chains in-process)."""
        return nullcontext()

    def advanced(self, claim: RunClaim, activation: Activation) -> None:
        """An activation of ``claim``'s run was written."""

    def parked(self, run_id: str, reason: str, detail: str) -> None:
        """A run was parked (drift, unknown version, repeated errors)."""

    def attempting(self, claim: ActivityClaim) -> AbstractContextManager[Any]:
        """Wraps one activity attempt: its body and the write of how it ended."""
        return nullcontext()

    def attempted(
        self, claim: ActivityClaim, outcome: str, error: dict[str, Any] | None, seconds: float
    ) -> None:
        """An attempt ended: ``completed``, ``retrying``, ``failed``, ``lease_lost`` or
        ``cancelled`` (a transactional body not run: its run had ended) (called inside
        `attempting`, once its outcome is written)."""

    def swept(self, counts: dict[str, int], seconds: float) -> None:
        """A sweep ran."""
