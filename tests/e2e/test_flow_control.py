"""Flow control with real workers over a real broker: a per-key limit never overlaps two
attempts of a key while other keys proceed, a rate limit holds across two worker processes,
and a backlog is served in priority order."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from django.db import connection

from continuum_django.models import WorkflowRun
from tests.testapp import flow

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]
Interval = tuple[str, dt.datetime, dt.datetime]


@pytest.fixture
def intervals() -> Iterator[Callable[[str], list[Interval]]]:
    """The table the activities record their attempts in; a reader of it, by label."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {flow.INTERVALS} (id serial PRIMARY KEY, label text,"
            " key text, started timestamptz, ended timestamptz)"
        )
        cursor.execute(f"TRUNCATE {flow.INTERVALS}")

    def read(label: str) -> list[Interval]:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT key, started, ended FROM {flow.INTERVALS} WHERE label = %s"
                " ORDER BY started",
                [label],
            )
            return list(cursor.fetchall())

    yield read
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {flow.INTERVALS}")


def _all_completed(run_ids: list[str], timeout: float) -> None:
    def done() -> bool:
        return WorkflowRun.objects.filter(pk__in=run_ids, status="completed").count() == len(
            run_ids
        )

    wait_until(done, timeout, f"{len(run_ids)} runs to complete")


def test_a_per_key_limit_of_one_never_overlaps_a_key_while_other_keys_proceed(
    worker_factory: StartWorker, intervals: Callable[[str], list[Interval]]
) -> None:
    worker_factory("w1", concurrency=3)
    worker_factory("w2", concurrency=3)
    keys = [f"c-{k}" for k in range(10)]
    runs = [flow.charge_customer.start(keys[n % 10], n, 0.01).id for n in range(200)]
    _all_completed(runs, timeout=240)
    attempts = intervals("charge")
    assert len(attempts) == 200
    for key in keys:
        mine = [(start, end) for k, start, end in attempts if k == key]
        assert len(mine) == 20
        for (_, end), (start, _) in itertools.pairwise(mine):
            assert start >= end, f"two attempts of {key} overlapped"
    # Other keys proceeded meanwhile: attempts of different keys did overlap.
    overlapping = sum(
        1 for (k1, s1, e1), (k2, s2, _) in itertools.pairwise(attempts) if k1 != k2 and s2 < e1
    )
    assert overlapping > 0


def test_a_rate_limit_holds_across_two_worker_processes_within_ten_percent(
    worker_factory: StartWorker, intervals: Callable[[str], list[Interval]]
) -> None:
    # 4/s, well within what two workers on two cores sustain: the limit, not the machine,
    # sets the pace, and a backlog stands from the start.
    runs = [flow.rated_run.start(n, "4/s").id for n in range(40)]
    worker_factory("w1", concurrency=2)
    worker_factory("w2", concurrency=2)
    _all_completed(runs, timeout=120)
    starts = [start for _, start, _ in intervals("rated")]
    assert len(starts) == 40
    gaps = [round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(starts)]
    # From the second start: the first starts as soon as its run advances, the others'
    # messages come behind the broker's backlog of 40 advances.
    rate = (len(starts) - 2) / (starts[-1] - starts[1]).total_seconds()
    assert 3.6 <= rate <= 4.4, f"{rate:.2f} starts per second under a limit of 4/s: {gaps}"
    # Nowhere faster: no 5 seconds hold more than their 20 starts (+10 %).
    for i, start in enumerate(starts):
        within = [s for s in starts[i:] if s < start + dt.timedelta(seconds=5)]
        assert len(within) <= 22, gaps


def test_a_backlog_is_served_in_priority_order(
    worker_factory: StartWorker, intervals: Callable[[str], list[Interval]]
) -> None:
    priorities = list(range(10))
    random.Random(17).shuffle(priorities)
    runs = [flow.serial_run.start(f"p{p}", p).id for p in priorities]  # queued: no worker yet
    worker_factory("w1", concurrency=1)
    _all_completed(runs, timeout=120)
    served = [key for key, _, _ in intervals("serial")]
    assert served == [f"p{p}" for p in sorted(priorities, reverse=True)]
