"""The worker fixture itself: workers consume real messages, stop cleanly and die as a group."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from celery import Celery

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

# Workers write to the test database (for example the versions they carry), so every
# test that starts one is transactional: pytest-django then empties the tables after it.
pytestmark = pytest.mark.django_db(transaction=True)


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the ")" closing the command name: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_worker_answers_pings_and_consumes_the_continuum_queue(
    worker_factory: Callable[..., WorkerProcess], celery_app: Celery
) -> None:
    worker = worker_factory("infra")
    replies = celery_app.control.ping(destination=[f"infra@{socket.gethostname()}"], timeout=5)
    assert replies, "the worker did not answer a remote-control ping"

    sent = celery_app.send_task("celery.accumulate", args=(1, 2), queue="continuum")
    assert wait_for(lambda: f"[{sent.id}] succeeded" in worker.log()), worker.log_tail()


def test_stop_is_a_warm_shutdown(worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory("graceful", beat=True)
    assert worker.stop() == 0
    assert group_members(worker.pid) == []


def test_kill_takes_down_the_whole_process_group(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    worker = worker_factory("doomed", concurrency=2, beat=True)
    assert len(group_members(worker.pid)) >= 4, "expected main process, 2 pool children, beat"

    assert worker.kill() == -signal.SIGKILL
    assert wait_for(lambda: group_members(worker.pid) == []), group_members(worker.pid)
