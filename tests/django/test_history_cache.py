"""The worker's history cache only ever holds committed events."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from django.db.models.functions import Now

from continuum_django.journal import OrmJournal
from continuum_django.models import Timer
from continuum_django.worker import runtime
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db(transaction=True)


class Abandon(Exception):
    pass


def test_events_of_a_rolled_back_claim_never_reach_the_cache() -> None:
    journal = OrmJournal()
    run = wf.sleeper.start(3600)
    runtime().advance_run(run.id)  # suspended on its timer
    assert journal.claim_run(run.id, "warm-up", 30) is None  # nothing due: just reads
    Timer.objects.filter(run_id=run.id).update(fire_at=Now())

    # A claim fires the due timer (appends timer_fired as seq 3) and reads the history, but
    # its transaction is rolled back: the timer never fired.
    with pytest.raises(Abandon), transaction.atomic():
        claim = journal.claim_run(run.id, "doomed", 30)
        assert claim is not None and claim.history[-1].type == "timer_fired"
        raise Abandon

    # Something else takes seq 3; the same journal (same process) must read it, not replay
    # the rolled-back event from memory.
    Timer.objects.filter(run_id=run.id).update(fire_at=Now() + dt.timedelta(hours=1))
    journal.request_cancel(run.id, "stop", terminate=False)
    claim = journal.claim_run(run.id, "worker", 30)
    assert claim is not None
    assert [e.type for e in claim.history] == [
        "run_started", "timer_scheduled", "cancel_requested",
    ]  # fmt: skip
