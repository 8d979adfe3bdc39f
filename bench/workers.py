"""Real Celery worker processes for the benchmark, and their memory (RSS) from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 30.0


class Worker:
    """One `celery worker` (prefork) in its own process group, logging to a file."""

    def __init__(
        self,
        concurrency: int,
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        name: str = "",
        settings: str = "bench.settings",
        extra: Sequence[str] = (),
    ) -> None:
        self.concurrency = concurrency
        self.log_path = log_path
        argv = [
            sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker",
            "-Q", "continuum,celery", "-n", f"{name or f'bench-{os.getpid()}'}@%h",
            "-c", str(concurrency), "-P", "prefork",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", os.environ.get("BENCH_WORKER_LOGLEVEL", "warning"), *extra,
        ]  # fmt: skip
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["DJANGO_SETTINGS_MODULE"] = settings
        with log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._popen.pid

    def check_alive(self) -> None:
        """Raise with the log's tail if the worker has exited."""
        code = self._popen.poll()
        if code is not None:
            raise RuntimeError(f"the Celery worker exited with code {code}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until a pool process has answered a ping task."""
        from bench.tasks import ping

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with suppress(Exception):
                if ping.delay().get(timeout=2) == "pong":
                    return
        self.stop()
        raise RuntimeError(f"the Celery worker was not ready in {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Warm shutdown; SIGKILL the whole process group if it takes too long."""
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self._popen.wait(STOP_TIMEOUT)
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self._popen.wait()

    def rss_kib(self) -> dict[str, int]:
        """Resident memory of the main process and of each pool process, in KiB."""
        sizes = {"main": _rss_kib(self.pid)}
        for index, child in enumerate(sorted(children(self.pid)), start=1):
            sizes[f"child{index}"] = _rss_kib(child)
        return sizes


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            # The command may contain spaces and parentheses: fields follow the last ')'.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


def _rss_kib(pid: int) -> int:
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
