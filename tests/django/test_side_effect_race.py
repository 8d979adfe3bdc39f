"""What `ctx.side_effect` promises when two advances of one run race: one value journaled
and seen by the run, though the function ran in both (docs/determinism.md, rule 7)."""

from __future__ import annotations

import pytest

from continuum_django.engine.journal import StaleClaim
from continuum_django.engine.replay import advance
from tests.contract.conftest import OrmHarness
from tests.testapp import reliability as rl

pytestmark = pytest.mark.django_db(transaction=True)


def test_racing_advances_journal_one_side_effect_value() -> None:
    harness = OrmHarness()
    run_id = harness.start(rl.side_effect_once)
    harness.sent.runs.clear()
    rl.DRAWS.clear()
    journal = harness.journal
    first, second = journal.snapshot_run(run_id), journal.snapshot_run(run_id)
    assert first is not None and second is not None

    def activation(claim):  # type: ignore[no-untyped-def]
        return advance(
            rl.side_effect_once,
            run_id=run_id,
            history=claim.history,
            mailbox=claim.mailbox,
            now=claim.now,
        )

    winner, loser = activation(first), activation(second)
    assert rl.DRAWS == [1, 2]  # both replays called the function
    harness.sent.send(journal.commit_activation(first, winner))
    with pytest.raises(StaleClaim):
        journal.commit_activation(second, loser)  # the late one writes nothing

    harness.drain()
    values = [e.payload["value"] for e in journal.history(run_id) if e.type == "side_effect"]
    assert values == [1]
    assert harness.run(run_id)["result"] == "drew 1"
    assert rl.DRAWS == [1, 2]  # later replays return the journaled value, calling nothing
