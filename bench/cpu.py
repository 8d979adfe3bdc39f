"""CPU time by process group, from /proc: where a benchmark phase spends the machine's cores.

Everything shares one machine, so throughput is bounded by the CPU each run costs across
all the processes it touches, not only the worker's. `CpuMeter` reads the user and system
time of every process before and after a phase, groups them, and reports the difference.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

from .workers import Worker, children

TICKS = os.sysconf("SC_CLK_TCK")
BROKERS = ("redis-server", "beam.smp")  # Redis, RabbitMQ (Erlang)


def _read(pid: int) -> tuple[str, float] | None:
    """A process's command name and CPU seconds (user + system) so far."""
    with suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        return name, (int(fields[11]) + int(fields[12])) / TICKS
    return None


class CpuMeter:
    """CPU seconds per group: the worker's pool processes, its main process, a peer's
    process (``peer``: DBOS's, which runs its workflows itself), Postgres, the broker, this
    process (which starts the runs and polls for their end), and the rest."""

    def __init__(self, worker: Worker | None = None, peer: int | None = None) -> None:
        self._worker = worker
        self._peer = peer
        self._before = self._sample()

    def _group(self, pid: int, name: str, pool: set[int]) -> str:
        if self._worker is not None and pid == self._worker.pid:
            return "worker_main"
        if pid in pool:
            return "worker_pool"
        if pid == self._peer:
            return "peer"
        if pid == os.getpid():
            return "starter"
        if name.startswith("postgres"):
            return "postgres"
        if name.startswith(BROKERS):
            return "broker"
        return "other"

    def _sample(self) -> dict[int, tuple[str, float]]:
        pool = set(children(self._worker.pid)) if self._worker is not None else set()
        found: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                read = _read(int(entry.name))
                if read is not None:
                    found[int(entry.name)] = (self._group(int(entry.name), read[0], pool), read[1])
        return found

    def spent(self) -> dict[str, float]:
        """CPU seconds each group spent since the meter was made (processes that started
        meanwhile count from zero; those that ended are lost, a small undercount)."""
        totals: dict[str, float] = {}
        for pid, (group, seconds) in self._sample().items():
            before = self._before.get(pid, (group, 0.0))[1]
            totals[group] = totals.get(group, 0.0) + max(0.0, seconds - before)
        return totals
