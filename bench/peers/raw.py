"""The raw database limit: "lock a run row, insert an event, update the row", one transaction
each, from as many processes as the workers have, with psycopg and (when installed) pgbench.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

ROWS = 2000

SCHEMA = [
    "DROP TABLE IF EXISTS bench_raw_event, bench_raw_run",
    "CREATE TABLE bench_raw_run (id bigint PRIMARY KEY, last_seq integer NOT NULL DEFAULT 0,"
    " updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE bench_raw_event (run_id bigint NOT NULL REFERENCES bench_raw_run (id),"
    " seq integer NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL,"
    " PRIMARY KEY (run_id, seq))",
    f"INSERT INTO bench_raw_run (id) SELECT generate_series(1, {ROWS})",
]

PGBENCH_SCRIPT = f"""\\set rid random(1, {ROWS})
BEGIN;
SELECT last_seq FROM bench_raw_run WHERE id = :rid FOR UPDATE;
INSERT INTO bench_raw_event (run_id, seq, payload, created_at)
  SELECT id, last_seq + 1, '{{"step": 1, "value": 2}}', now() FROM bench_raw_run WHERE id = :rid;
UPDATE bench_raw_run SET last_seq = last_seq + 1, updated_at = now() WHERE id = :rid;
END;
"""


def create_tables(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in SCHEMA:
            conn.execute(statement)


def _loop(conninfo: str, seconds: float, seed: int, start_at: float) -> int:
    """One process's loop: transactions committed in ``seconds`` from ``start_at``."""
    rng = random.Random(seed)
    done = 0
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        time.sleep(max(0.0, start_at - time.time()))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            run_id = rng.randint(1, ROWS)
            with conn.transaction():
                cur.execute("SELECT last_seq FROM bench_raw_run WHERE id = %s FOR UPDATE", [run_id])
                row = cur.fetchone()
                seq = (row[0] if row else 0) + 1
                cur.execute(
                    "INSERT INTO bench_raw_event (run_id, seq, payload, created_at)"
                    " VALUES (%s, %s, %s, now())",
                    [run_id, seq, Jsonb({"step": 1, "value": 2})],
                )
                cur.execute(
                    "UPDATE bench_raw_run SET last_seq = %s, updated_at = now() WHERE id = %s",
                    [seq, run_id],
                )
            done += 1
    return done


def psycopg_tx_per_s(conninfo: str, concurrency: int, seconds: float) -> float:
    """Transactions per second of ``concurrency`` processes running the loop together."""
    start_at = time.time() + 0.5  # every process connected before the clock starts
    context = multiprocessing.get_context("fork")
    with context.Pool(concurrency) as pool:
        counts = pool.starmap(
            _loop, [(conninfo, seconds, seed, start_at) for seed in range(concurrency)]
        )
    return sum(counts) / seconds


def pgbench_tx_per_s(settings_dict: dict[str, Any], concurrency: int, seconds: float) -> float:
    """The same transaction from pgbench (C, no Python in the loop)."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise FileNotFoundError("pgbench is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "step.sql")
        script.write_text(PGBENCH_SCRIPT)
        argv = [pgbench, "-n", "-c", str(concurrency), "-j", str(concurrency)]
        argv += ["-T", str(max(1, round(seconds))), "-f", str(script)]
        for flag, key in (("-h", "HOST"), ("-p", "PORT"), ("-U", "USER")):
            if settings_dict.get(key):
                argv += [flag, str(settings_dict[key])]
        env = {"PGPASSWORD": str(settings_dict.get("PASSWORD") or "")}
        done = subprocess.run(
            [*argv, settings_dict["NAME"]],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        )
    match = re.search(r"tps = ([\d.]+)", done.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
    return float(match.group(1))
