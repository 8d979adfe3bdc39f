"""Shared test infrastructure: tier markers, a clean Redis broker, real Celery workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from celery import Celery
from django.conf import settings
from django.db import connection

from tests.celery_app import app as _celery_app

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
TIERS = ("engine", "contract", "django", "e2e", "bench")
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 200
STARTED_WORKERS = pytest.StashKey[list["WorkerProcess"]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with the tier named by its directory (tests/e2e/... -> e2e)."""
    for item in items:
        with suppress(ValueError):
            tier = item.path.relative_to(TESTS_DIR).parts[0]
            if tier in TIERS:
                item.add_marker(tier)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the test's Celery workers to its failure report."""
    report = yield
    if report.failed:
        for worker in item.stash.get(STARTED_WORKERS, []):
            title = f"Celery worker {worker.name} (pid {worker.pid}, {worker.log_path})"
            report.sections.append((title, worker.log_tail()))
    return report


class WorkerProcess:
    """A Celery worker in its own process group, so kill() also takes its pool and beat."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._popen = popen

    @classmethod
    def launch(
        cls, name: str, argv: list[str], env: dict[str, str], log_path: Path
    ) -> WorkerProcess:
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        """Pid of the main process, which is also the id of the worker's process group."""
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until the worker logs "ready."; kill it and fail the test if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return
            if not self.running:
                break
            time.sleep(0.1)
        code = self.kill()
        pytest.fail(
            f"Celery worker {self.name} was not ready within {timeout:.0f}s "
            f"(exit code {code}); log tail:\n{self.log_tail()}",
            pytrace=False,
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Warm shutdown (SIGTERM to the main process); SIGKILL the group after `timeout`."""
        if self.running:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        self._kill_group()  # nothing the worker forked may outlive it
        return self._popen.wait()

    def kill(self) -> int:
        """SIGKILL the whole process group at once, like a machine losing power."""
        self._kill_group()
        return self._popen.wait()

    def _kill_group(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def celery_app() -> Celery:
    """The suite's Celery app (also the current app, so `on_commit` dispatch reaches Redis)."""
    return _celery_app


@pytest.fixture(scope="session")
def broker_url() -> str:
    """URL of the suite's Redis database, flushed so no stale message from an older run is left."""
    url: str = settings.CELERY_BROKER_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis broker {url} is unreachable ({exc}). "
            "Start Redis or point CELERY_BROKER_URL at one.",
            pytrace=False,
        )
    finally:
        client.close()
    return url


def _test_database_url() -> str:
    """DATABASE_URL of the test database pytest-django created, for worker processes."""
    if connection.vendor != "postgresql":
        pytest.fail(f"worker tests need Postgres, not {connection.vendor}", pytrace=False)
    db = connection.settings_dict
    user = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        user += ":" + quote(db["PASSWORD"], safe="")
    auth = f"{user}@" if user else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{auth}{quote(db['HOST'] or '', safe='')}{port}/{quote(db['NAME'], safe='')}"


@pytest.fixture
def worker_factory(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    broker_url: str,
    tmp_path: Path,
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real Celery workers on the test database; every one is stopped at teardown.

    Workers see only committed data, so tests using them need
    `@pytest.mark.django_db(transaction=True)`.
    """
    base_env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "CELERY_BROKER_URL": broker_url,
        # The pytest process's settings module (tests.settings unless --ds says otherwise);
        # under override_settings (live_server uses it) only the environment still knows it.
        "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE or os.environ["DJANGO_SETTINGS_MODULE"],
        "PYTHONUNBUFFERED": "1",
    }
    started = request.node.stash.setdefault(STARTED_WORKERS, [])

    def start_worker(
        name: str = "w1",
        env: dict[str, str] | None = None,
        concurrency: int = 2,
        beat: bool = False,
    ) -> WorkerProcess:
        stem = f"{name}-{len(started) + 1}"
        argv = [
            sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
            "-Q", "continuum,celery", "-n", f"{name}@%h", "-c", str(concurrency),
            "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "info",
        ]  # fmt: skip
        if beat:
            argv += ["-B", "--schedule-filename", str(tmp_path / f"beat-{stem}")]
        worker = WorkerProcess.launch(
            name, argv, {**base_env, **(env or {})}, tmp_path / f"worker-{stem}.log"
        )
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start_worker
    for worker in started:
        worker.stop()
