"""Record golden histories: ``python -m tests.golden.record``. Never overwrites a file.

Golden histories are a compatibility promise: future code must keep replaying them.
Add new files; never edit or re-record existing ones.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from continuum_django.engine.definitions import registry
from continuum_django.engine.local import LocalRunner, new_run
from continuum_django.engine.updates import deliver_update

from . import workflows as g

HERE = Path(__file__).parent


def record(name: str, runner: LocalRunner, run_id: str) -> None:
    path = HERE / f"{name}.json"
    if path.exists():
        print(f"kept {path.name} (golden files are never re-recorded)")
        return
    run = runner.journal.runs[run_id]
    document = {
        "format": 1,
        "workflow": run.workflow_name,
        "version": run.version,
        "run_id": run_id,
        "outcome": {"status": run.status, "result": run.result, "error": run.error},
        "events": [
            {"seq": e.seq, "type": str(e.type), "command_id": e.command_id, "payload": e.payload}
            for e in runner.journal.history(run_id)
        ],
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(f"recorded {path.name}")


def scenario(name: str, start: Callable[[LocalRunner], str], *then: Callable[..., Any]) -> None:
    runner = LocalRunner()
    run_id = start(runner)
    runner.run_until_idle(skip_time=False)
    for step in then:
        step(runner, run_id)
        runner.run_until_idle()
    record(name, runner, run_id)


def signal(name: str, payload: Any) -> Callable[[LocalRunner, str], None]:
    return lambda r, run_id: r.dispatcher.send(
        r.journal.deliver_signal(run_id, name, payload, None)
    )


def signal_with_start(
    workflow: Any, name: str, payload: Any, *args: Any
) -> Callable[[LocalRunner], str]:
    """Start ``workflow`` by signal-with-start: its mailbox holds the signal from the start."""

    def start(r: LocalRunner) -> str:
        new = new_run(workflow, args, {}, idempotency_key="golden")
        run_id, _, dispatch = r.journal.signal_with_start(new, name, payload, None)
        r.dispatcher.send(dispatch)
        return run_id

    return start


def update(name: str, request_id: str, payload: Any) -> Callable[[LocalRunner, str], None]:
    return lambda r, run_id: r.dispatcher.send(
        deliver_update(r.journal, run_id, name, request_id, payload)
    )


def skip_time(r: LocalRunner, run_id: str) -> None:
    r.run_until_idle(skip_time=True)


def cancel(r: LocalRunner, run_id: str) -> None:
    r.dispatcher.send(r.journal.request_cancel(run_id, "golden cancel", terminate=False))


def start_with_timeout(workflow: Any, timeout: float) -> Callable[[LocalRunner], str]:
    def start(r: LocalRunner) -> str:
        run_id, _, dispatch = r.journal.create_run(new_run(workflow, timeout=timeout))
        r.dispatcher.send(dispatch)
        return run_id

    return start


def pass_deadline(r: LocalRunner, run_id: str) -> None:
    deadline = r.journal.runs[run_id].deadline
    assert deadline is not None
    r.clock.set(deadline)
    r.dispatcher.send(r.journal.time_out_runs(10))


def main() -> int:
    scenario(
        "activity_signal_activity",
        lambda r: r.start(g.activity_signal_activity, "o-1"),
        signal("decision", "approved"),
    )
    scenario("signal_timeout", lambda r: r.start(g.signal_timeout), skip_time)
    scenario("timer", lambda r: r.start(g.timer), skip_time)
    scenario("retry_then_success", lambda r: r.start(g.retry_then_success), skip_time)
    scenario("failure_handled", lambda r: r.start(g.failure_handled), skip_time)
    scenario("side_effects", lambda r: r.start(g.side_effects))
    scenario("saga_success", lambda r: r.start(g.saga, ["a", "b"], False))
    scenario("saga_failing_compensation", lambda r: r.start(g.saga, ["a", "broken", "c"], True),
             skip_time)  # fmt: skip
    scenario("saga_parallel", lambda r: r.start(g.saga, ["a", "b", "c"], True, True))
    scenario("child_fan_out", lambda r: r.start(g.fan_out, 3))
    scenario("cancellation_cascade", lambda r: r.start(g.cancelled_parent), cancel)
    scenario("cancel_during_signal_wait", lambda r: r.start(g.cancel_while_waiting), cancel)
    scenario("transactional_activity", lambda r: r.start(g.transactional), skip_time)
    runner = LocalRunner()
    run_id = runner.start(g.chain, 1)
    runner.run_until_idle()
    for cycle in (1, 2, 3):
        record(f"continue_as_new_{cycle}", runner, run_id)
        last = runner.journal.history(run_id)[-1]
        run_id = last.payload["next_run_id"] if last.type == "run_continued" else run_id
    scenario("run_timed_out", start_with_timeout(g.late, 60), pass_deadline)
    scenario("patched_new_history", lambda r: r.start(g.patched), signal("go", None))
    current = registry.workflows[("golden.patched", 1)]
    registry.workflows[("golden.patched", 1)] = replace(current, fn=g.patched_before_the_patch)
    try:
        scenario("patched_old_history", lambda r: r.start(g.patched), signal("go", None))
    finally:
        registry.workflows[("golden.patched", 1)] = current
    scenario("signal_with_start", signal_with_start(g.signal_with_start, "add", "apple", "o-1"))
    scenario("publish", lambda r: r.start(g.publish))
    runner = LocalRunner()
    run_id = runner.start(g.publish_chain, 1)
    runner.run_until_idle()
    record("publish_chain_1", runner, run_id)
    record("publish_chain_2", runner, runner.journal.history(run_id)[-1].payload["next_run_id"])
    scenario(
        "updates_replied_rejected_timed_out",
        lambda r: r.start(g.updates),
        update("set", "req-1", "blue"),
        update("set", "req-2", "green"),
        skip_time,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
