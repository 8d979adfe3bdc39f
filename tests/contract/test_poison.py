"""Poison values: a result that cannot be journaled fails once, never loops."""

from __future__ import annotations

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
