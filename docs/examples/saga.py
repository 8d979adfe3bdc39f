"""A trip booking saga: each booking registers its undo; a declined payment rolls back.

Run it: ``python docs/examples/saga.py`` (in-process, no database or broker needed).
"""

from typing import Any

from continuum_django import ActivityFailed, NonRetryableError, activity, workflow
from continuum_django.engine.local import LocalRunner


@activity(name="trip.book")
def book(kind: str) -> str:
    return f"{kind}-booking"


@activity(name="trip.cancel")
def cancel_booking(booking: str) -> None:
    print(f"  cancelled {booking}")


@activity(name="trip.charge")
def charge(amount_cents: int) -> str:
    raise NonRetryableError("card declined")


@workflow(name="trip.book_trip")
def book_trip(ctx: Any, amount_cents: int) -> dict[str, Any]:
    for kind in ("flight", "hotel", "car"):
        booking = ctx.activity(book, kind)
        ctx.on_rollback(cancel_booking, booking)  # registered only once the booking exists
    try:
        ctx.activity(charge, amount_cents)
    except ActivityFailed as declined:
        failures = ctx.compensate()  # car, then hotel, then flight
        return {"status": "rolled back", "why": declined.error_message, "failed": len(failures)}
    return {"status": "booked"}


if __name__ == "__main__":
    runner = LocalRunner()
    run_id = runner.start(book_trip, 129_00)
    runner.run_until_idle()
    print(runner.journal.runs[run_id].result)
