"""Poison values: a result that cannot be journaled fails once, never loops."""

from __future__ import annotations

from typing import Any

import pytest

from tests.testapp import reliability as rl

from .conftest import Harness


def test_an_activity_result_that_cannot_be_journaled_fails_once_for_good(
    harness: Harness,
) -> None:
    run = harness.start(rl.poison_activity)
    harness.drain()
    row = harness.run(run)
    assert row["status"] == "failed"
    failed = next(e for e in harness.journal.history(run) if e.type == "activity_failed")
    assert failed.payload["attempts"] == 1  # the body ran once: no retry repeats its effects
    error = failed.payload["error"]
    assert error["type"] == "continuum_django.engine.exceptions.PayloadError"
    assert error["non_retryable"] is True
    assert "result of activity" in error["message"]
    assert "['bytes']" in error["message"]  # the path to the value that was refused
    assert len(harness.task_ids(run)) == 1


def _fails_once_with(harness: Harness, workflow: Any, *needles: str) -> dict[str, Any]:
    run = harness.start(workflow)
    harness.drain()
    row = harness.run(run)
    assert row["status"] == "failed"  # not left pending for the sweep to re-send forever
    assert harness.types(run)[-1] == "run_failed"
    for needle in needles:
        assert needle in row["error"]["message"]
    return row


@pytest.mark.parametrize(
    ("workflow", "needles"),
    [
        (rl.poison_result, ["workflow result", "NUL"]),
        (rl.poison_attribute, ["attributes", "NUL"]),
        (rl.poison_side_effect, ["side_effect value", "digits"]),
    ],
)
def test_a_value_the_journal_cannot_hold_fails_the_run_once(
    harness: Harness, workflow: Any, needles: list[str]
) -> None:
    row = _fails_once_with(harness, workflow, *needles)
    assert row["error"]["type"] == "continuum_django.engine.exceptions.PayloadError"


def test_an_error_message_the_journal_cannot_hold_is_kept_escaped(harness: Harness) -> None:
    row = _fails_once_with(harness, rl.poison_error, "bad", "surrogate")
    assert "\x00" not in row["error"]["message"]
    assert "\ud800" not in row["error"]["message"]
