"""The engine imports neither Django nor Celery; the public API is pinned."""

from __future__ import annotations

import subprocess
import sys

import continuum_django

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("django", "celery", "kombu"):
            raise ImportError(f"the engine imported {name}")
sys.meta_path.insert(0, Block())
import continuum_django.engine.local, continuum_django.engine.runtime
from continuum_django import workflow, activity, RetryPolicy, ActivityFailed
from continuum_django.engine.local import LocalRunner

@activity
def one() -> int:
    return 1

@workflow(name="pure")
def pure(ctx):
    return ctx.activity(one) + 1

runner = LocalRunner()
run_id = runner.start(pure)
runner.run_until_idle()
print(runner.journal.runs[run_id].result)
"""


def test_engine_runs_with_django_and_celery_blocked() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"


def test_public_names_are_pinned() -> None:
    assert set(continuum_django.__all__) == {
        "workflow", "activity", "RetryPolicy", "ActivityContext", "WorkflowContext",
        "ActivityHandle", "RunHandle", "Event", "start", "signal", "cancel", "result",
        "get_run", "ContinuumError", "UnknownWorkflow", "UnknownActivity", "RunNotFound",
        "RunNotActive", "PayloadError", "ReplayDriftError", "LeaseLost", "ActivityFailed",
        "NonRetryableError", "SignalTimeout", "WorkflowFailed", "WorkflowCancelled",
        "ResultTimeout", "CancellationRequested", "ChildFailed", "ChildCancelled",
        "ChildHandle", "SignalRejected", "retry", "dead_letter", "signal_with_start", "state",
        "update", "UpdateRequest", "UpdateRejected", "UpdateTimeout",
        "WorkflowTimedOut",
        "InvalidTimeout",
        "TransactionalActivityError",
        "Cron", "Every", "At", "Overlap", "Catchup", "ScheduleError",
        "FlowControlError",
    }  # fmt: skip
    for name in continuum_django.__all__:
        assert getattr(continuum_django, name) is not None
