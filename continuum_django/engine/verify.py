"""The replay check: a stored history replayed through current code, writing nothing.

`continuum_versions replay-check` and `continuum_django.testing.replay` both call
`replay_history`, which calls `advance` — the same verb the live worker uses — with
``replay_only`` set, so side effects not yet journaled are never run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .context import EngineConfig
from .definitions import WorkflowDefinition
from .events import Event, EventType
from .replay import Outcome, advance

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayVerdict:
    """What replaying one history through current code showed."""

    run_id: str
    workflow: str
    version: int
    outcome: str
    drift: str | None = None
    first_difference: dict[str, Any] | None = None
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.drift is None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "version": self.version,
            "outcome": self.outcome,
            "drift": self.drift,
            "first_difference": self.first_difference,
        }


def replay_history(
    definition: WorkflowDefinition[..., Any],
    history: Sequence[Event],
    *,
    run_id: str = "replay",
    config: EngineConfig | None = None,
) -> ReplayVerdict:
    """Replay ``history`` through ``definition``; a verdict with the drift, if any.

    Besides command drift, a history that ended the run must end the same way: a
    recorded result or failure type the code no longer reproduces is drift too.
    """
    config = dataclasses.replace(config or EngineConfig(), replay_only=True)
    now = next((e.created_at for e in reversed(history) if e.created_at), None) or _EPOCH
    activation = advance(definition, run_id=run_id, history=history, now=now, config=config)
    verdict = ReplayVerdict(
        run_id=run_id,
        workflow=definition.name,
        version=definition.version,
        outcome=activation.outcome,
        drift=activation.drift,
        first_difference=activation.drift_command,
        result=activation.result,
    )
    if activation.outcome == Outcome.DRIFT:
        return verdict
    ended = next((e for e in history if e.type in _COMPARED), None)
    mismatch = _ending_mismatch(ended, activation.outcome, activation.result, activation.error)
    if mismatch is None or ended is None:
        return verdict
    return dataclasses.replace(
        verdict,
        drift=f"replay drift: the history {mismatch}",
        first_difference={
            "position": None,
            "recorded": str(ended.type),
            "issued": activation.outcome,
            "seq": ended.seq,
        },
    )


_COMPARED = {EventType.RUN_COMPLETED, EventType.RUN_FAILED}


def _ending_mismatch(
    ended: Event | None, outcome: str, result: Any, error: dict[str, Any] | None
) -> str | None:
    if ended is None:
        return None
    payload = ended.payload or {}
    if ended.type == EventType.RUN_COMPLETED:
        if outcome != Outcome.COMPLETED:
            return f"completed the run (seq {ended.seq}), but the code now ends {outcome}"
        if result != payload.get("result"):
            return (
                f"completed the run with {payload.get('result')!r} (seq {ended.seq}), but the "
                f"code now returns {result!r}"
            )
    elif ended.type == EventType.RUN_FAILED:
        recorded = (payload.get("error") or {}).get("type")
        failed = f"failed the run with {recorded} (seq {ended.seq})"
        if outcome != Outcome.FAILED:
            return f"{failed}, but the code now ends {outcome}"
        now_raised = (error or {}).get("type")
        if now_raised != recorded:
            return f"{failed}, but the code now raises {now_raised}"
    return None
