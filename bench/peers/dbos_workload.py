"""DBOS's side of the benchmark; runs in DBOS's own virtualenv (imports neither Django nor bench).

Usage: python dbos_workload.py SYSTEM_DATABASE_URL RUNS REPEATS LATENCY_RUNS
Prints one JSON object: the seconds each repeat of RUNS workflows took (all started with
`DBOS.start_workflow` from this process, then awaited) and, for each repeat, the latencies
of LATENCY_RUNS single runs one after another. Around the throughput repeats it prints
`throughput begins` and `throughput ends`, each time waiting for a line on stdin, so that
the caller can read every process's CPU time at both moments.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from typing import Any

from dbos import DBOS, DBOSConfig


def _mark(moment: str) -> None:
    """Tell the caller where the workload is, and wait until it has taken its reading."""
    print(moment, flush=True)
    sys.stdin.readline()


def main(url: str, runs: int, repeats: int, latency_runs: int) -> dict[str, Any]:
    DBOS(config=DBOSConfig(name="continuum-bench", system_database_url=url))

    @DBOS.step()
    def first(x: int) -> dict[str, Any]:
        return {"step": 1, "value": x}

    @DBOS.step()
    def second(previous: dict[str, Any]) -> dict[str, Any]:
        return {"step": 2, "value": previous["value"] + 1}

    @DBOS.step()
    def third(previous: dict[str, Any]) -> dict[str, Any]:
        return {"step": 3, "value": previous["value"] * 2}

    @DBOS.workflow()
    def three_steps(x: int) -> dict[str, Any]:
        return third(second(first(x)))

    DBOS.launch()
    try:
        for handle in [DBOS.start_workflow(three_steps, i) for i in range(min(runs, 20))]:
            handle.get_result()  # warm-up: connections, caches
        elapsed = []
        _mark("throughput begins")
        for _ in range(repeats):
            started = time.perf_counter()
            handles = [DBOS.start_workflow(three_steps, i) for i in range(runs)]
            for handle in handles:
                handle.get_result()
            elapsed.append(time.perf_counter() - started)
        _mark("throughput ends")
        latencies: list[list[float]] = []
        for _ in range(repeats):
            latencies.append([])
            for i in range(latency_runs):
                started = time.perf_counter()
                DBOS.start_workflow(three_steps, i).get_result()
                latencies[-1].append(time.perf_counter() - started)
    finally:
        DBOS.destroy()
    return {"version": version("dbos"), "elapsed": elapsed, "latencies": latencies}


if __name__ == "__main__":
    url, runs, repeats, latency_runs = sys.argv[1], *map(int, sys.argv[2:5])
    print(json.dumps(main(url, runs, repeats, latency_runs)))
