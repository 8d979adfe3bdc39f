"""The soak's chaos: worker process groups killed -9 and restarted, the broker's Redis db
flushed, Postgres restarted, each on a seeded random schedule bounded in count and time."""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from .workers import Worker, children

SETTINGS = "bench.soak_settings"


def cluster_restart_command(host: str, port: int) -> list[str] | None:
    """``pg_ctlcluster VERSION NAME restart`` for the local cluster on ``port``, if any."""
    if host not in ("127.0.0.1", "localhost", "::1", ""):
        return None
    try:
        listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    except OSError:
        return None
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == str(port) and re.fullmatch(r"[\d.]+", fields[0]):
            return ["pg_ctlcluster", fields[0], fields[1], "restart"]
    return None


def parse_command(text: str) -> list[str]:
    command = shlex.split(text)
    if not command:
        raise ValueError("--postgres-restart-cmd is empty")
    return command


@dataclass
class Fleet:
    """The soak's workers: worker 0 also runs beat (the sweep); each restarts as it was."""

    logs: Path
    concurrency: int
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    killed_pids: set[int] = field(default_factory=set)

    def start(self, index: int) -> Worker:
        extra = ["-B", "-s", str(self.logs / "beat-schedule")] if index == 0 else []
        worker = Worker(
            self.concurrency,
            self.logs / f"worker{index}.log",
            self.env,
            name=f"soak{index}-{os.getpid()}",
            settings=SETTINGS,
            extra=extra,
        )
        if index < len(self.workers):
            self.workers[index] = worker
            self.started_at[index] = time.monotonic()
        else:
            self.workers.append(worker)
            self.started_at.append(time.monotonic())
        return worker

    def kill(self, index: int) -> None:
        """SIGKILL the worker's whole process group (pool and beat too), then restart it."""
        worker = self.workers[index]
        self.killed_pids.add(worker.pid)
        self.killed_pids.update(children(worker.pid))
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker._popen.wait()
        self.start(index)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@dataclass
class Chaos:
    """When each disruption happens (seconds after the chaos begins), drawn from one seed."""

    kills: list[tuple[float, int]]
    flushes: list[float]
    restarts: list[float]

    @classmethod
    def plan(
        cls,
        rng: random.Random,
        seconds: float,
        kill_every: tuple[float, float],
        workers: int,
        flushes: int,
        restarts: int,
    ) -> Chaos:
        kills = []
        moment = rng.uniform(*kill_every)
        while moment < seconds:
            kills.append((moment, rng.randrange(workers)))
            moment += rng.uniform(*kill_every)
        # Flushes and restarts fall in the window's middle: kills before and after them.
        return cls(
            kills=kills,
            flushes=sorted(rng.uniform(0.1, 0.7) * seconds for _ in range(flushes)),
            restarts=sorted(rng.uniform(0.3, 0.7) * seconds for _ in range(restarts)),
        )


@dataclass
class Tally:
    kills: int = 0
    flushes: int = 0
    restarts: int = 0
    restart_windows: list[tuple[float, float]] = field(default_factory=list)  # wall clock
    last_disruption: float = 0.0


def run_chaos(
    chaos: Chaos,
    fleet: Fleet,
    flush: Callable[[], None],
    restart_postgres: Callable[[], None] | None,
    tick: Callable[[float], None],
) -> Tally:
    """Carry out the plan; ``tick(elapsed)`` runs between disruptions (signals, cancels)."""
    began = time.monotonic()
    tally = Tally()
    events: list[tuple[float, str, int]] = [(at, "kill", index) for at, index in chaos.kills]
    events += [(at, "flush", 0) for at in chaos.flushes]
    if restart_postgres is not None:
        events += [(at, "restart", 0) for at in chaos.restarts]
    last_flush = -1.0
    for at, what, index in sorted(events):
        while (elapsed := time.monotonic() - began) < at:
            tick(elapsed)
            time.sleep(min(0.2, max(0.0, at - elapsed)))
        if what == "kill":
            fleet.kill(index)
            tally.kills += 1
        elif what == "flush":
            flush()
            last_flush = time.monotonic()
            tally.flushes += 1
        elif restart_postgres is not None:
            start = time.time()
            restart_postgres()
            tally.restart_windows.append((start, time.time()))
            tally.restarts += 1
        tally.last_disruption = time.monotonic()
    # A flushed Redis lost the queues' bindings too: only a restarted worker declares them
    # again, so every worker still running from before the last flush is killed once more.
    for index, started in enumerate(fleet.started_at):
        if started < last_flush:
            fleet.kill(index)
            tally.kills += 1
            tally.last_disruption = time.monotonic()
    return tally
