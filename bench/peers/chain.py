"""The non-durable floor: a plain Celery chain of three trivial tasks on the same broker."""

from __future__ import annotations

import time

from celery import chain
from celery.result import AsyncResult

from ..tasks import chain_first, chain_second, chain_third


def _send(x: int) -> AsyncResult:
    return chain(chain_first.s(x), chain_second.s(), chain_third.s()).apply_async()


def throughput(runs: int, timeout: float = 600.0) -> float:
    """Seconds from sending the first of ``runs`` chains until every last task's result is in."""
    began = time.perf_counter()
    results = [_send(i) for i in range(runs)]
    for result in results:
        result.get(timeout=timeout)
    return time.perf_counter() - began


def latencies(runs: int, timeout: float = 60.0) -> list[float]:
    """Seconds from sending one chain to reading its result, ``runs`` times in a row."""
    found = []
    for i in range(runs):
        began = time.perf_counter()
        _send(i).get(timeout=timeout)
        found.append(time.perf_counter() - began)
    return found
