"""A cancel meets a sleep -> continue_as_new loop on real workers: the chain ends cancelled
whatever step the cancel lands in, and nothing runs after it (issue 14, finding 1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

import continuum_django as continuum
from continuum_django.models import WorkflowRun
from tests.testapp import reliability as rl

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


def test_cancelling_a_looping_chain_ends_it_cancelled(worker_factory: StartWorker) -> None:
    worker_factory()
    run = rl.fast_ticker.start(1)
    wait_until(
        lambda: WorkflowRun.objects.filter(chain_root_id=run.id).count() >= 3,
        what="a few incarnations of the loop",
    )
    continuum.cancel(run.id, reason="stop the loop")
    with pytest.raises(continuum.WorkflowCancelled):
        run.result(timeout=60)
    chain = WorkflowRun.objects.filter(chain_root_id=run.id)
    assert not chain.exclude(status__in=["continued", "cancelled"]).exists()
    (tip,) = chain.filter(status="cancelled")
    assert not chain.filter(continued_from=tip).exists()  # no successor after the cancel
    types = [e.type for e in tip.events.order_by("seq")]
    after = types[types.index("cancel_requested") + 1 :]
    # at most the timer's firing, if it was already due, then the end: nothing scheduled
    assert after in (["run_cancelled"], ["timer_fired", "run_cancelled"])
