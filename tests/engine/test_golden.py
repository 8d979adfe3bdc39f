"""Golden histories: every recorded history in tests/golden must keep replaying on current code.

They are a compatibility promise: add files with ``python -m tests.golden.record``; never
edit or re-record one. A failure here means the change would strand or fork live runs.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from continuum_django.engine.definitions import registry
from continuum_django.engine.events import Event
from continuum_django.engine.replay import advance
from tests.golden import workflows  # noqa: F401 - registers the golden workflows

GOLDEN = sorted((Path(__file__).parent.parent / "golden").glob("*.json"))
LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def load(path: Path) -> tuple[dict[str, Any], list[Event]]:
    document = json.loads(path.read_text())
    # Child and successor run ids derive from the run's id: files that have none use this.
    document.setdefault("run_id", "00000000-0000-4000-8000-000000000000")
    return document, [Event.from_json(e) for e in document["events"]]


def comparable(event: Any) -> tuple[str, Any]:
    """An end event without the version hash, which changes with every compatible edit."""
    payload = event.payload
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != "version_hash"}
    return str(event.type), payload


def test_the_golden_set_is_complete() -> None:
    names = {path.stem for path in GOLDEN}
    assert {
        "activity_signal_activity", "signal_timeout", "timer", "retry_then_success",
        "failure_handled", "side_effects", "saga_success", "saga_failing_compensation",
        "saga_parallel", "child_fan_out", "cancellation_cascade", "continue_as_new_1",
        "continue_as_new_2", "continue_as_new_3", "patched_old_history", "patched_new_history",
        "signal_with_start", "publish", "publish_chain_1", "publish_chain_2",
        "updates_replied_rejected_timed_out",
        "run_timed_out",
        "transactional_activity",
    } <= names  # fmt: skip


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_history_replays_to_the_same_end(path: Path) -> None:
    document, history = load(path)
    definition = registry.workflow(document["workflow"], document["version"])
    *before_end, end = history

    activation = advance(definition, run_id=document["run_id"], history=before_end, now=LATER)

    assert activation.drift is None
    assert activation.outcome == document["outcome"]["status"]
    assert activation.result == document["outcome"]["result"]
    # Every recorded command was matched, and the only new event is the recorded end.
    assert [comparable(e) for e in activation.events] == [comparable(end)]


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_complete_golden_history_replays_without_new_events(path: Path) -> None:
    document, history = load(path)
    definition = registry.workflow(document["workflow"], document["version"])
    activation = advance(definition, run_id=document["run_id"], history=history, now=LATER)
    assert activation.outcome == document["outcome"]["status"]
    assert activation.events == []
