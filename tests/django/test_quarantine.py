"""Poison-run quarantine on real Postgres: a run whose advances keep failing with an
unexpected error is parked (`error`) after QUARANTINE_AFTER tries, and an operator's retry
resumes it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import DatabaseError, connection

from continuum_django.operations import retry_run
from tests.contract.conftest import OrmHarness
from tests.testapp import reliability as rl

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def poisoned() -> Iterator[list[str]]:
    """Runs whose ids are added to the list have every event after their first refused by
    the database (a trigger), as a value the database cannot store would be."""
    ids: list[str] = []
    yield ids
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS continuum_test_poison ON continuum_workflowevent")
        cursor.execute("DROP FUNCTION IF EXISTS continuum_test_poison()")


def _poison(run_id: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION continuum_test_poison() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.run_id = '{run_id}' AND NEW.seq > 1 THEN "
            "RAISE EXCEPTION 'poisoned write'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER continuum_test_poison BEFORE INSERT ON continuum_workflowevent "
            "FOR EACH ROW EXECUTE FUNCTION continuum_test_poison()"
        )


def _cure() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER continuum_test_poison ON continuum_workflowevent")


def test_a_run_failing_every_advance_is_parked_after_the_limit_then_retried(
    poisoned: list[str],
) -> None:
    harness = OrmHarness()
    run_id = harness.start(rl.two_steps)
    harness.sent.runs.clear()
    _poison(run_id)
    limit = harness.runtime.quarantine_after
    for attempt in range(1, limit + 1):
        with pytest.raises(DatabaseError, match="poisoned write"):
            harness.runtime.advance_run(run_id)
        row = harness.run(run_id)
        assert row["failure_count"] == attempt
        assert row["park_reason"] == ("error" if attempt == limit else "")
    row = harness.run(run_id)
    assert row["status"] == "suspended"
    assert "poisoned write" in row["park_detail"]
    assert "Traceback" in row["park_detail"]
    assert harness.runtime.advance_run(run_id) == "skipped"  # parked: nobody advances it
    assert harness.types(run_id) == ["run_started"]  # nothing partial was written

    _cure()
    retry_run(run_id)  # its wake-up goes to the broker; the harness delivers it here
    harness.sent.runs.append(run_id)
    harness.drain()
    assert harness.run(run_id)["status"] == "completed"
    assert harness.run(run_id)["result"] == ["first", "second"]


def test_progress_between_failures_restarts_the_count(poisoned: list[str]) -> None:
    harness = OrmHarness()
    run_id = harness.start(rl.two_steps)
    harness.sent.runs.clear()
    _poison(run_id)
    for _ in range(harness.runtime.quarantine_after - 1):
        with pytest.raises(DatabaseError):
            harness.runtime.advance_run(run_id)
    _cure()
    harness.runtime.advance_run(run_id)  # it makes progress: the revision moves
    assert harness.run(run_id)["park_reason"] == ""
    _poison_again = "CREATE TRIGGER continuum_test_poison BEFORE INSERT ON continuum_workflowevent"
    with connection.cursor() as cursor:
        cursor.execute(f"{_poison_again} FOR EACH ROW EXECUTE FUNCTION continuum_test_poison()")
    harness.sent.activities.clear()
    task_id = harness.task_ids(run_id)[0]
    with pytest.raises(DatabaseError):
        harness.runtime.execute_activity(task_id)  # a completion that fails counts too
    row = harness.run(run_id)
    assert row["failure_count"] == 1
    assert row["park_reason"] == ""
