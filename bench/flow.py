"""Flow control's cost: claim throughput of three-step runs with limits on (a concurrency
limit per key that never binds, so every claim is admitted by the database) vs off."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from .report import Report
from .suite import STEPS_PER_RUN, Sizes

if TYPE_CHECKING:
    from .workers import Worker


def _seconds(worker: Worker, runs: int, namespace: str, limited: bool) -> float:
    # Imported here: Django is set up only once `python -m bench` has started.
    from .phases import wait_finished
    from .workflows import limited_steps, three_steps

    workflow = limited_steps if limited else three_steps
    start = workflow.options(namespace=namespace).start
    began = time.perf_counter()
    for i in range(runs):
        start(i)
    wait_finished(worker, runs, namespace)
    return time.perf_counter() - began


def measure_flow(report: Report, sizes: Sizes, logs: Path) -> None:
    """``flow.{off,on}.steps_per_s`` on one worker, alternating, and their ratio."""
    from .workers import Worker

    runs = min(sizes.runs, 500)  # a ratio, not a peak: a smaller batch is enough
    worker = Worker(sizes.concurrency, logs / "worker-flow.log")
    try:
        worker.wait_ready()
        _seconds(worker, min(runs, 20), "flow-warm-up", limited=True)
        found: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(sizes.repeats):
            for mode in ("off", "on"):
                seconds = _seconds(worker, runs, f"flow-{mode}-{i}", limited=mode == "on")
                found[mode].append(runs * STEPS_PER_RUN / seconds)
    finally:
        worker.stop()
    report.note(
        f"flow: {runs} three-step runs per repeat, limits off vs on (a concurrency limit of "
        "1000 per key over 10 keys: admitted by the claim, never binding)"
    )
    for mode, values in found.items():
        report.median_figure(f"flow.{mode}.steps_per_s", values, "steps/s")
    report.ratio("flow.on_vs_off_steps_per_s", "flow.on.steps_per_s", "flow.off.steps_per_s")
