"""continuum's measurements: throughput, latency, history growth and database cost.

Each function drives real Celery workers through the public client API and returns raw
measurements; bench/__main__.py takes medians and prints them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Max, Min

from continuum_django.models import ActivityTask, RunStatus, WorkflowEvent, WorkflowRun

from .sqlcount import SqlCounter
from .workers import Worker
from .workflows import sequence, three_steps

STEPS_PER_RUN = 3
STALL_SECONDS = 120.0  # no run finished for this long: something is broken, stop


def start_runs(runs: int, namespace: str) -> None:
    """Start ``runs`` three-step runs, each in its own transaction, as a web app would."""
    start = three_steps.options(namespace=namespace).start
    for i in range(runs):
        start(i)


def wait_finished(worker: Worker, runs: int, namespace: str) -> None:
    """Poll until every run of ``namespace`` completed; fail on a failure or a stall."""
    in_namespace = WorkflowRun.objects.filter(namespace=namespace)
    done, last_progress = -1, time.monotonic()
    while True:
        by_status = in_namespace.order_by().values_list("status").annotate(n=Count("id"))
        counts: dict[str, int] = dict(by_status)
        finished = counts.get(RunStatus.COMPLETED, 0)
        if finished >= runs:
            return
        if counts.get(RunStatus.FAILED) or counts.get(RunStatus.CANCELLED):
            raise RuntimeError(f"benchmark runs did not complete: {counts}")
        if in_namespace.parked().exists():
            raise RuntimeError(f"a benchmark run was parked: {in_namespace.parked().first()}")
        if finished > done:
            done, last_progress = finished, time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            raise RuntimeError(
                f"no run finished for {STALL_SECONDS:.0f}s ({finished}/{runs} done, {counts});"
                f" worker log:\n{worker.log_tail()}"
            )
        worker.check_alive()
        time.sleep(0.05)


def throughput(worker: Worker, runs: int, namespace: str) -> float:
    """Seconds from the first start until all ``runs`` three-step runs have completed."""
    began = time.perf_counter()
    start_runs(runs, namespace)
    wait_finished(worker, runs, namespace)
    return time.perf_counter() - began


def vacuum() -> None:
    """VACUUM (ANALYZE) the journal's tables: the rows the throughput phase left behind
    would otherwise be vacuumed by autovacuum during the next phase, on the same 2 cores."""
    tables = [m._meta.db_table for m in (WorkflowRun, WorkflowEvent, ActivityTask)]
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")


def latencies(runs: int, timeout: float = 60.0) -> list[float]:
    """Seconds from `start` to `result` of one three-step run, ``runs`` times in a row."""
    found = []
    for i in range(runs):
        began = time.perf_counter()
        three_steps.options(namespace="latency").start(i).result(timeout=timeout)
        found.append(time.perf_counter() - began)
    return found


def sequence_seconds(steps: int, timeout: float) -> float:
    """How long one run of ``steps`` sequential activities took, by the database's clocks.

    From the row's creation to its final commit, so the client's polling interval does not
    blur a short run.
    """
    handle = sequence.options(namespace=f"history-{steps}").start(steps)
    if handle.result(timeout=timeout) != steps:
        raise RuntimeError(f"the {steps}-step run returned a wrong result")
    span = WorkflowRun.objects.filter(pk=handle.id).aggregate(
        began=Min("created_at"), ended=Max("finished_at")
    )
    return (span["ended"] - span["began"]).total_seconds()


@dataclass(frozen=True, slots=True)
class DbCost:
    """What the workers' tasks sent to the database for ``runs`` three-step runs."""

    runs: int
    worker: Counter[str]  # "task|statement|shape", "task|commit|atomic", "task|tasks|" ...
    client_commits: int  # the benchmark process's own commits (starts and polling)

    @property
    def steps(self) -> int:
        return self.runs * STEPS_PER_RUN

    def total(self, kind: str, task: str | None = None) -> int:
        return sum(
            count
            for key, count in self.worker.items()
            if key.split("|")[1] == kind and (task is None or key.split("|")[0] == task)
        )

    def tasks(self) -> dict[str, int]:
        return {k.split("|")[0]: v for k, v in self.worker.items() if k.split("|")[1] == "tasks"}

    def micros(self, task: str, what: str) -> int:
        """``task_us`` (whole task bodies) or ``statement_us`` (inside statements), summed."""
        return self.worker.get(f"{task}|time|{what}", 0)

    def shapes(self, task: str) -> Counter[str]:
        return Counter(
            {
                key.split("|")[2]: count
                for key, count in self.worker.items()
                if key.startswith(f"{task}|statement|")
            }
        )


def db_cost(worker: Worker, runs: int, namespace: str, broker_url: str) -> DbCost:
    """Run ``runs`` runs on a counting worker (BENCH_COUNT_SQL=1) and collect its counts."""
    from .sqlcount import read_counts

    read_counts(broker_url)  # drop what warm-up left
    client = SqlCounter()
    with connection.execute_wrapper(client):
        start_runs(runs, namespace)
        wait_finished(worker, runs, namespace)
    commits = client.take()
    client_commits = sum(v for k, v in commits.items() if k.split("|")[1] == "commit")
    time.sleep(0.5)  # the last task's counts are flushed just after it returns
    return DbCost(runs=runs, worker=read_counts(broker_url), client_commits=client_commits)
