"""Plain Celery tasks: the non-durable floor (a chain of three) and a readiness ping."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="bench.ping")
def ping() -> str:
    return "pong"


# Only the chain's last result is read, so only it goes to the result backend.
@shared_task(name="bench.chain_first", ignore_result=True)
def chain_first(x: int) -> dict[str, Any]:
    return {"step": 1, "value": x}


@shared_task(name="bench.chain_second", ignore_result=True)
def chain_second(previous: dict[str, Any]) -> dict[str, Any]:
    return {"step": 2, "value": previous["value"] + 1}


@shared_task(name="bench.chain_third")
def chain_third(previous: dict[str, Any]) -> dict[str, Any]:
    return {"step": 3, "value": previous["value"] * 2}
