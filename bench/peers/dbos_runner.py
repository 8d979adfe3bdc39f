"""DBOS as a peer: its own virtualenv (made on first use), its system database on our Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import db
from ..cpu import CpuMeter

REQUIREMENT = "dbos>=3.4"
MINIMUM = (3, 4)
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT_SECONDS = 1800
WORKLOAD = Path(__file__).resolve().parent / "dbos_workload.py"


class Unavailable(Exception):
    """DBOS cannot be installed or run here; the reason is the message."""


@dataclass(frozen=True, slots=True)
class DbosResult:
    version: str
    elapsed: list[float]
    latencies: list[list[float]]  # one list of single-run latencies per repeat
    workflows: int  # every workflow the process ran: warm-up, repeats and latency runs
    commits: int  # transactions committed in its system database over the whole process
    cpu: dict[str, float]  # CPU seconds by process group over the throughput repeats


def venv_dir() -> Path:
    return Path(os.environ.get("BENCH_DBOS_VENV") or REPO_ROOT / ".bench" / "venv-dbos")


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('dbos'))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def _new_enough(version: str) -> bool:
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return parts >= MINIMUM


def ensure_venv(log: Path) -> Path:
    """The virtualenv's python, with DBOS installed (created with this interpreter if missing)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    version = _installed_version(python)
    if version and _new_enough(version):
        return python
    with log.open("ab") as out:
        steps = [[sys.executable, "-m", "venv", str(venv)]] if not python.exists() else []
        steps.append(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", REQUIREMENT]
        )
        for argv in steps:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=900)
            if done.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                raise Unavailable(f"`{' '.join(argv[-3:])}` failed: {' '.join(tail)}")
    version = _installed_version(python)
    if not version or not _new_enough(version):
        raise Unavailable(f"{REQUIREMENT} is not installable here (found {version})")
    return python


def run(
    settings_dict: dict[str, Any],
    runs: int,
    repeats: int,
    latency_runs: int,
    log: Path,
) -> DbosResult:
    """Run bench/peers/dbos_workload.py in DBOS's virtualenv on a fresh system database."""
    python = ensure_venv(log)
    name = f"{settings_dict['NAME']}_dbos"
    db.recreate(settings_dict, name)
    url = db.conninfo_url(settings_dict, name)
    before = db.xact_commit(settings_dict, name)
    argv = [str(python), str(WORKLOAD), url, str(runs), str(repeats), str(latency_runs)]
    with log.open("ab") as err:
        returncode, output, cpu = _drive(argv, err)
    if returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"the DBOS workload failed (exit {returncode}):\n{tail}")
    found = json.loads(output)
    time.sleep(1.0)  # its sessions have ended; let their statistics reach pg_stat_database
    commits = db.xact_commit(settings_dict, name) - before
    warm_up = min(runs, 20)
    return DbosResult(
        version=found["version"],
        elapsed=found["elapsed"],
        latencies=found["latencies"],
        workflows=warm_up + (runs + latency_runs) * repeats,
        commits=commits,
        cpu=cpu,
    )


def _drive(argv: list[str], err: IO[bytes]) -> tuple[int, str, dict[str, float]]:
    """Run the workload; read every process's CPU time when its throughput repeats begin
    and end (it waits for a line on stdin at each). Its exit status, its last line of
    output, and the CPU seconds by group in between (none if it never got that far)."""
    meter: CpuMeter | None = None
    cpu: dict[str, float] = {}
    last = ""
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        deadline = threading.Timer(TIMEOUT_SECONDS, process.kill)  # a hung workload is killed
        deadline.start()
        try:
            for line in process.stdout:
                last = line.strip() or last
                if last in ("throughput begins", "throughput ends"):
                    if meter is None:
                        meter = CpuMeter(peer=process.pid)
                    else:
                        cpu = meter.spent()
                    with suppress(BrokenPipeError):  # it died: its exit status tells
                        process.stdin.write("\n")
                        process.stdin.flush()
        finally:
            deadline.cancel()
            if process.poll() is None:
                process.kill()
            with suppress(BrokenPipeError):
                process.stdin.close()
        return process.wait(), last, cpu
