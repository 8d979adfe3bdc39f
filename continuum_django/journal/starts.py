"""A new run's first advance message: its ``run_started`` payload, signed by the journal.

The message spares that advance its read of the run (see `Runtime.advance_run`). Anyone
who can publish to the broker could send one, so the worker replays only a payload that
carries the project's signature (``django.core.signing``, keyed by ``SECRET_KEY``) for
that very run; anything else is ignored and the run is read from the database. The write
that commits the advance checks the payload against the stored one all the same: the
database stays the truth, the signature keeps a forger from having workflow code (and
its ``ctx.side_effect`` functions) replayed on input of their choosing.
"""

from __future__ import annotations

from typing import Any

from django.core import signing

SALT = "continuum.advance_run.started"


def signed_start(run_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What the message carries for run ``run_id`` whose ``run_started`` is ``payload``
    (the workflow's name rides along unsigned, for logs)."""
    return {
        "workflow": payload.get("workflow"),
        "signed": signing.dumps([run_id, payload], salt=SALT),
    }


def verified_start(run_id: str, started: Any) -> dict[str, Any] | None:
    """The ``run_started`` payload a message carries for run ``run_id``, if the journal
    signed it for that run; None for anything else (unsigned, tampered, another run's)."""
    if not isinstance(started, dict) or not isinstance(started.get("signed"), str):
        return None
    try:
        signed_run, payload = signing.loads(started["signed"], salt=SALT)
    except (signing.BadSignature, TypeError, ValueError):
        return None
    if signed_run != run_id or not isinstance(payload, dict):
        return None
    return payload
