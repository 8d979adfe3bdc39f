"""Cancel a run that is waiting: it cleans up (a compensation) before it ends `cancelled`.

Run it: ``python docs/examples/cancellation.py`` (in-process, no database or broker needed).
"""

from typing import Any

from continuum_django import CancellationRequested, activity, workflow
from continuum_django.engine.local import LocalRunner


@activity(name="stock.reserve")
def reserve(sku: str) -> str:
    return f"reservation of {sku}"


@activity(name="stock.release")
def release(reservation: str) -> None:
    print(f"  released {reservation}")


@workflow(name="stock.hold")
def hold(ctx: Any, sku: str) -> str:
    reservation = ctx.activity(reserve, sku)
    ctx.on_rollback(release, reservation)
    try:
        ctx.wait_signal("paid")
    except CancellationRequested:
        ctx.compensate()  # cleanup may run activities; the run still ends cancelled
        raise
    return "paid"


if __name__ == "__main__":
    runner = LocalRunner()
    run_id = runner.start(hold, "sku-1")
    runner.run_until_idle()
    runner.dispatcher.send(runner.journal.request_cancel(run_id, "customer left", False))
    runner.run_until_idle()
    print(runner.journal.runs[run_id].status)
    print([str(e.type) for e in runner.journal.history(run_id)])
