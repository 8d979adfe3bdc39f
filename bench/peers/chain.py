"""The non-durable floor: a plain Celery chain of three trivial tasks on the same broker."""

from __future__ import annotations

import time

from celery import chain, states
from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult

from ..tasks import chain_first, chain_second, chain_third

# A wait this long for one result: look whether it is stored already. Celery's Redis result
# backend (seen with Celery 5.7) can leave get() waiting on its pubsub for a result that is
# already stored; the suite then reads it directly and says how often it had to.
STALL_SECONDS = 2.0
missed = 0  # results read directly after a stall, since the process started


def _send(x: int) -> AsyncResult:
    return chain(chain_first.s(x), chain_second.s(), chain_third.s()).apply_async()


def _wait(result: AsyncResult, timeout: float) -> None:
    """``result.get()``, or the stored result if Celery missed announcing it (`STALL_SECONDS`)."""
    global missed
    deadline = time.monotonic() + timeout
    while True:
        try:
            result.get(timeout=min(STALL_SECONDS, max(0.0, deadline - time.monotonic())))
            return
        except ResultTimeout:
            meta = result.backend.get_task_meta(result.id, cache=False)
            if meta["status"] == states.SUCCESS:
                missed += 1
                return
            if meta["status"] in states.READY_STATES or time.monotonic() >= deadline:
                raise


def throughput(runs: int, timeout: float = 600.0) -> float:
    """Seconds from sending the first of ``runs`` chains until every last task's result is in."""
    began = time.perf_counter()
    results = [_send(i) for i in range(runs)]
    for result in results:
        _wait(result, timeout)
    return time.perf_counter() - began


def latencies(runs: int, timeout: float = 60.0) -> list[float]:
    """Seconds from sending one chain to reading its result, ``runs`` times in a row."""
    found = []
    for i in range(runs):
        began = time.perf_counter()
        _wait(_send(i), timeout)
        found.append(time.perf_counter() - began)
    return found
