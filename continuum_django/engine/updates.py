"""Updates: requests a caller sends a run and waits on until the workflow replies.

A request travels as a signal under a reserved name (``update:<name>``) whose payload
carries the request's id, so it is buffered, deduplicated (the request id is its dedupe
key) and taken exactly like a signal. The workflow answers with a journaled command,
``update_replied`` or ``update_rejected``, which the caller reads from the journal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import codec
from .events import Event, EventType
from .exceptions import UpdateRejected

if TYPE_CHECKING:
    from .context import WorkflowContext
    from .journal import Dispatch, Journal

# Signal names that carry update requests start with this; plain signals may not.
UPDATE_PREFIX = "update:"

REPLY_EVENTS = frozenset({EventType.UPDATE_REPLIED, EventType.UPDATE_REJECTED})


def signal_name(name: str) -> str:
    """The mailbox name of update requests called ``name``."""
    return f"{UPDATE_PREFIX}{name}"


class UpdateRequest:
    """One update request, as ``ctx.wait_update`` hands it to workflow code.

    ``payload`` is what the caller sent; answer it exactly once with `reply` or `reject`.
    """

    __slots__ = ("_ctx", "id", "name", "payload")

    def __init__(self, ctx: WorkflowContext, *, id: str, name: str, payload: Any) -> None:
        self._ctx = ctx
        self.id = id
        self.name = name
        self.payload = payload

    def reply(self, value: Any = None) -> None:
        """Journal ``value`` (JSON, like activity results) as the answer the caller gets."""
        self._ctx._answer_update(self, EventType.UPDATE_REPLIED, value)

    def reject(self, reason: str) -> None:
        """Journal a refusal: the caller's `update()` raises `UpdateRejected` with ``reason``."""
        self._ctx._answer_update(self, EventType.UPDATE_REJECTED, str(reason))

    def __repr__(self) -> str:
        return f"<UpdateRequest {self.name!r} {self.id}>"


def find_reply(events: Iterable[Event], request_id: str) -> Event | None:
    """The answer journaled to request ``request_id`` among ``events``, if any."""
    for event in events:
        if event.type in REPLY_EVENTS and (event.payload or {}).get("request_id") == request_id:
            return event
    return None


def reply_value(event: Event, run_id: str) -> Any:
    """What the caller of `update()` gets from the answer ``event``: the reply's value, or
    `UpdateRejected` raised with the workflow's reason."""
    payload = event.payload or {}
    if event.type == EventType.UPDATE_REJECTED:
        reason = payload.get("reason", "")
        raise UpdateRejected(
            f"run {run_id} rejected update {payload.get('name')!r} "
            f"(request {payload.get('request_id')}): {reason}",
            run_id=run_id,
            update=payload.get("name"),
            request_id=payload.get("request_id"),
            reason=reason,
        )
    return codec.decode(payload.get("result"))


def deliver_update(
    journal: Journal, run_id: str, name: str, request_id: str, encoded: Any
) -> Dispatch:
    """Put the request (``encoded``: its payload in the codec's form) in the run's mailbox;
    a request id already delivered to the run's chain is not delivered again."""
    message = {"request_id": request_id, "payload": encoded}
    return journal.deliver_signal(run_id, signal_name(name), message, request_id)
