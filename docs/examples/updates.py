"""A workflow that answers update requests: each one is replied to or rejected, once.

Run it: ``python docs/examples/updates.py`` (in-process, no database or broker needed).
In a Django project the caller is one line, ``continuum_django.update(run_id, "add", 3)``,
which sends the request and returns the reply; here the in-memory journal stands in.
"""

from typing import Any

from continuum_django import UpdateRejected, workflow
from continuum_django.engine.local import LocalRunner
from continuum_django.engine.updates import deliver_update, find_reply, reply_value


@workflow(name="cart.keep")
def cart(ctx: Any, limit: int) -> list[str]:
    items: list[str] = []
    while len(items) < limit:
        request = ctx.wait_update("add")
        if request.payload in items:
            request.reject(f"{request.payload} is already in the cart")
            continue
        items.append(request.payload)
        request.reply(len(items))  # the caller of update() gets this value
    return items


@cart.update_validator("add")
def _an_item_name(item: Any) -> None:
    # Runs in the caller's process before anything is stored: a bad request never
    # reaches the run's history.
    if not isinstance(item, str) or not item:
        raise ValueError("an item is a non-empty string")


def ask(runner: LocalRunner, run_id: str, request_id: str, item: str) -> Any:
    runner.dispatcher.send(deliver_update(runner.journal, run_id, "add", request_id, item))
    runner.run_until_idle()
    answer = find_reply(runner.journal.history(run_id), request_id)
    assert answer is not None
    return reply_value(answer, run_id)


if __name__ == "__main__":
    runner = LocalRunner()
    run_id = runner.start(cart, 2)
    runner.run_until_idle()
    print("reply:", ask(runner, run_id, "r1", "apple"))
    try:
        ask(runner, run_id, "r2", "apple")
    except UpdateRejected as rejected:
        print("rejected:", rejected.reason)
    print("reply:", ask(runner, run_id, "r3", "pear"))
    print("result:", runner.journal.runs[run_id].result)
    print([str(e.type) for e in runner.journal.history(run_id)])
