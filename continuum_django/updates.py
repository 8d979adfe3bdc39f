"""The client side of updates: send a run a request and wait for the workflow's answer."""

from __future__ import annotations

import time
import uuid
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform

from .client import _end_listener, _max_length, _tip, check_text
from .conf import app_settings
from .engine import codec
from .engine.definitions import Duration, registry, to_seconds
from .engine.events import Event
from .engine.exceptions import ContinuumError, RunNotActive, UpdateRejected, UpdateTimeout
from .engine.updates import (
    REPLY_EVENTS,
    UPDATE_PREFIX,
    deliver_update,
    reply_value,
    signal_name,
)
from .models import TERMINAL, Signal, WorkflowEvent, WorkflowRun
from .worker import runtime


def update(
    run_id: Any,
    name: str,
    payload: Any = None,
    *,
    timeout: Duration | None = None,
    request_id: str | None = None,
) -> Any:
    """Send update ``name`` with ``payload`` to the run and return the workflow's reply.

    The workflow takes the request with ``ctx.wait_update(name)`` and answers it with
    ``request.reply(value)`` (returned here) or ``request.reject(reason)`` (raised here
    as `UpdateRejected`). A validator registered with ``@wf.update_validator(name)`` runs
    first, in this process: if it raises, `UpdateRejected` is raised and nothing is stored.

    Calling again with the same ``request_id`` (per continue_as_new chain) delivers
    nothing new and returns the same answer. Raises `UpdateTimeout` when no answer is
    journaled within ``timeout`` (seconds or a timedelta; the request stays delivered:
    retry with its ``request_id`` to keep waiting), `RunNotActive` when the run has
    ended, or ends without answering, and `RunNotFound` for an unknown run.
    """
    limit = _max_length(Signal, "name") - len(UPDATE_PREFIX)
    check_text(name, "update name", max_length=limit)
    if request_id is None:
        request_id = str(uuid.uuid4())
    check_text(request_id, "request_id", max_length=_max_length(Signal, "dedupe_key"))
    seconds = to_seconds(timeout, what="update timeout")
    using = app_settings().DATABASE
    if not transaction.get_autocommit(using=using):
        raise ContinuumError(
            f"update {name!r} was called inside a transaction: the request would only reach "
            "the run when the transaction commits, so its reply could never arrive in time. "
            "Call update() outside transaction.atomic()"
        )
    tip = _tip(run_id)
    chain = str(tip.chain_root_id or tip.id)
    if _answer(chain, request_id) is None and not _delivered(chain, name, request_id):
        _send(tip, name, payload, request_id)
    return _wait(str(run_id), chain, name, request_id, seconds)


def _send(tip: WorkflowRun, name: str, payload: Any, request_id: str) -> None:
    """Validate the request and put it in the run's mailbox (once per request id)."""
    if tip.status in TERMINAL:
        raise RunNotActive(
            f"run {tip.id} is {tip.status}; it cannot take update {name!r}",
            run_id=str(tip.id),
            status=tip.status,
        )
    settings = app_settings()
    encoded = codec.encode(
        payload,
        what=f"payload of update {name!r}",
        max_bytes=settings.MAX_PAYLOAD_BYTES,
        max_depth=settings.max_payload_depth,
    )
    definition = registry.workflows.get((tip.workflow_name, tip.workflow_version))
    validator = definition.update_validators.get(name) if definition is not None else None
    if validator is not None:
        try:
            validator(codec.decode(encoded))
        except Exception as exc:
            raise UpdateRejected(
                f"update {name!r} to run {tip.id} was rejected by its validator: "
                f"{type(exc).__name__}: {exc}",
                run_id=str(tip.id),
                update=name,
                request_id=request_id,
                reason=str(exc),
            ) from exc
    engine = runtime()
    engine.dispatcher.send(deliver_update(engine.journal, str(tip.id), name, request_id, encoded))


def _delivered(chain: str, name: str, request_id: str) -> bool:
    """Whether the request is already in the chain's mailbox (taken or not)."""
    signals = Signal.objects.using(app_settings().DATABASE)
    return signals.filter(
        chain_root_id=chain, name=signal_name(name), dedupe_key=request_id
    ).exists()


def _answer(chain: str, request_id: str) -> tuple[Event, str] | None:
    """The answer journaled to ``request_id`` by any run of the chain, with its run's id."""
    # The same expression and condition as the one-answer index, so that it serves this.
    row = (
        WorkflowEvent.objects.using(app_settings().DATABASE)
        .annotate(request_id=KeyTextTransform("request_id", "payload"))
        .filter(Q(run__chain_root_id=chain) | Q(run_id=chain))
        .filter(type__in=sorted(REPLY_EVENTS), request_id=request_id)
        .first()
    )
    if row is None:
        return None
    event = Event(seq=row.seq, type=row.type, command_id=row.command_id, payload=row.payload)
    return event, str(row.run_id)


def _wait(run_id: str, chain: str, name: str, request_id: str, timeout: float | None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    with _end_listener() as wait:  # listening first: no answer announced after a read is missed
        while True:
            tip = _tip(run_id)  # read before the answer: an end implies no answer
            answer = _answer(chain, request_id)
            if answer is not None:
                return reply_value(*answer)
            if tip.status in TERMINAL:
                raise RunNotActive(
                    f"run {tip.id} ended {tip.status} without answering update {name!r} "
                    f"(request {request_id})",
                    run_id=str(tip.id),
                    status=tip.status,
                    request_id=request_id,
                )
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise UpdateTimeout(
                    f"run {tip.id} did not answer update {name!r} (request {request_id}) "
                    f"within {timeout:g} seconds; the request stays delivered: call update() "
                    "again with this request_id to keep waiting",
                    run_id=str(tip.id),
                    update=name,
                    request_id=request_id,
                    timeout=timeout,
                )
            # A notice (the run ended, or an answer was journaled) is a hint: the loop reads.
            wait(chain, left)
