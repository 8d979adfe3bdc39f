"""Wiring for Celery: the dispatcher that turns a `Dispatch` into messages, and the runtime."""

from __future__ import annotations

from functools import cache

from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver

from .conf import app_settings
from .engine.journal import Dispatch
from .engine.runtime import Runtime
from .journal import OrmJournal


class CeleryDispatcher:
    """Sends `advance_run` / `execute_activity` messages once the current transaction commits.

    The messages are hints: if the broker is down the sweeper re-sends from the database.
    """

    def __init__(self, using: str, queue: str) -> None:
        self.using = using
        self.queue = queue

    def send(self, dispatch: Dispatch) -> None:
        if dispatch:
            transaction.on_commit(lambda: self._publish(dispatch), using=self.using, robust=True)

    def _publish(self, dispatch: Dispatch) -> None:
        from .tasks import advance_run, execute_activity

        for run_id, eta in dict.fromkeys(dispatch.runs):
            advance_run.apply_async((run_id,), queue=self.queue, eta=eta)  # type: ignore[arg-type]
        for task_id, queue, eta in dispatch.activities:
            execute_activity.apply_async((task_id,), queue=queue, eta=eta)  # type: ignore[arg-type]


@cache
def runtime() -> Runtime:
    """The process-wide runtime, built from settings on first use."""
    conf = app_settings()
    return Runtime(
        journal=OrmJournal(conf.DATABASE),
        dispatcher=CeleryDispatcher(conf.DATABASE, conf.DEFAULT_QUEUE),
        worker_id=conf.worker_id,
        lease_seconds=float(conf.LEASE_SECONDS),
        config=conf.engine_config(),
        redispatch_after=float(conf.REDISPATCH_AFTER),
    )


@receiver(setting_changed)
def _reset(setting: str, **kwargs: object) -> None:
    if setting == "CONTINUUM":
        runtime.cache_clear()
