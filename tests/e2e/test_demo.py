"""The README's first command: the demo entry point, on SQLite and the file-system broker."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_demo_completes_an_order_end_to_end_on_sqlite(tmp_path: Path) -> None:
    # No DATABASE_URL, no CELERY_BROKER_URL: the defaults a fresh checkout runs with.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    env["EXAMPLE_STATE_DIR"] = str(tmp_path)  # keep the checkout's own db.sqlite3 alone
    done = subprocess.run(
        [sys.executable, "manage.py", "continuum_demo"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    printed = next(line for line in done.stdout.splitlines() if line.startswith("Result: "))
    assert ast.literal_eval(printed.removeprefix("Result: "))["status"] == "shipped"
    assert "run_completed" in done.stdout
    assert "Celery worker stopped." in done.stdout
    assert "http://127.0.0.1:8000/admin/continuum/workflowrun/" in done.stdout
    assert (tmp_path / "db.sqlite3").stat().st_size > 0
    assert (tmp_path / ".broker" / "messages").is_dir()
