"""Give a run a deadline: a payment that is not confirmed within a day ends timed out.

Run it: ``python docs/examples/deadlines.py`` (in-process, no database or broker needed;
the test kit's clock jumps to the deadline instead of waiting a day).
"""

from datetime import timedelta
from typing import Any

from continuum_django import WorkflowTimedOut, workflow
from continuum_django.testing import WorkflowEnvironment


@workflow(name="payments.await_confirmation")
def await_confirmation(ctx: Any, payment_id: str) -> str:
    ctx.wait_signal("confirmed")  # no timeout of its own: the run's deadline bounds it
    return f"{payment_id} confirmed"


if __name__ == "__main__":
    env = WorkflowEnvironment()
    # In a project: await_confirmation.options(timeout=timedelta(days=1)).start("p-1")
    run = env.start(await_confirmation.options(timeout=timedelta(days=1)), "p-1")
    try:
        run.result()
    except WorkflowTimedOut as timed_out:
        print(f"{type(timed_out).__name__}: deadline {timed_out.deadline}")
    print([str(e.type) for e in run.history()])

    in_time = env.start(await_confirmation.options(timeout=timedelta(days=1)), "p-2")
    in_time.signal("confirmed")
    print(in_time.result())
