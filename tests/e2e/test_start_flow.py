"""Start limits with real workers over a real broker: a per-key limit of one never has two
live runs of a key at once, while runs of other keys proceed."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from django.db import connection, transaction

from continuum_django.models import TERMINAL, WorkflowRun
from tests.testapp import flow, startflow

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
StartWorker = Callable[..., "WorkerProcess"]


@pytest.fixture
def marks() -> Iterator[Callable[[], list[tuple[str, str]]]]:
    """The table the runs mark their entry and exit in; a reader of it: (label, key) in
    the order they were marked."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {flow.INTERVALS} (id serial PRIMARY KEY, label text,"
            " key text, started timestamptz, ended timestamptz)"
        )
        cursor.execute(f"TRUNCATE {flow.INTERVALS}")

    def read() -> list[tuple[str, str]]:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT label, key FROM {flow.INTERVALS} ORDER BY started, id")
            return list(cursor.fetchall())

    yield read
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {flow.INTERVALS}")


def _live_per_key() -> int:
    """The most runs of one key that are live and not waiting, in one snapshot."""
    live = (
        WorkflowRun.objects.filter(workflow_name=startflow.BRIEF, flow_state="")
        .exclude(status__in=TERMINAL)
        .values_list("flow_key", flat=True)
    )
    return max(Counter(live).values(), default=0)


def test_a_per_key_limit_of_one_never_has_two_live_runs_of_a_key(
    worker_factory: StartWorker, marks: Callable[[], list[tuple[str, str]]]
) -> None:
    worker_factory("w1", concurrency=3)
    worker_factory("w2", concurrency=3)
    keys = [f"c-{k}" for k in range(4)]
    with transaction.atomic():
        runs = [startflow.brief.start(keys[n % 4], n).id for n in range(24)]
        # Stored at once, most of them waiting: one run admitted per key.
        assert WorkflowRun.objects.filter(pk__in=runs, flow_state="slot").count() == 20
    seen = 0

    def done() -> bool:
        nonlocal seen
        seen = max(seen, _live_per_key())
        return WorkflowRun.objects.filter(pk__in=runs, status="completed").count() == len(runs)

    wait_until(done, 180, f"{len(runs)} runs to complete")
    assert seen == 1
    marked = marks()
    assert len(marked) == 48
    for key in keys:
        mine = [label.rsplit(".", 1)[-1] for label, k in marked if k == key]
        assert mine == ["in", "out"] * 6, f"two runs of {key} were live at once: {mine}"
    # Other keys proceeded meanwhile: a run of one key entered while another's was inside.
    interleaved = sum(
        1
        for (la, ka), (lb, kb) in itertools.pairwise(marked)
        if ka != kb and la.endswith(".in") and lb.endswith(".in")
    )
    assert interleaved > 0
