"""Wiring for Celery: the dispatcher, the runtime, and the worker hooks that register versions
and sweep."""

from __future__ import annotations

import logging
import threading
from functools import cache
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from django.core.signals import setting_changed
from django.db import connections, transaction
from django.dispatch import receiver

from .conf import app_settings
from .engine.journal import Dispatch
from .engine.observe import Observer
from .engine.runtime import Runtime
from .journal import OrmJournal
from .sweeper import Sweeper

logger = logging.getLogger("continuum")


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
            started = dispatch.starts.get(run_id) if eta is None else None
            if started is None:
                advance_run.apply_async((run_id,), queue=self.queue, eta=eta)  # type: ignore[arg-type]
                continue
            advance_run.apply_async(  # type: ignore[call-arg]
                (run_id,),
                {"started": started},
                queue=self.queue,
                # For logs and monitoring, instead of Celery's walk of the whole payload.
                kwargsrepr=f"{{'started': <run_started of {started.get('workflow')}>}}",
            )
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
        quarantine_after=int(conf.QUARANTINE_AFTER),
        observer=observer(conf.DATABASE, bool(conf.OPENTELEMETRY)),
    )


def observer(using: str, traced: bool) -> Observer:
    """The runtime's observer: Django signals, inside OpenTelemetry spans when ``traced``."""
    from .lifecycle import SignalObserver

    signals = SignalObserver()
    if not traced:
        return signals
    from .tracing import TracingObserver

    return TracingObserver(signals, using)


@receiver(setting_changed)
def _reset(setting: str, **kwargs: object) -> None:
    if setting == "CONTINUUM":
        runtime.cache_clear()


# -- the worker's versions ------------------------------------------------------


def own_queue(nodename: str) -> str:
    """The queue only this worker consumes: runs it resumes from a park are sent there."""
    return f"continuum.worker.{nodename}"


class VersionKeeper(threading.Thread):
    """Keeps a worker's versions registered and resumes runs parked on them.

    It beats once at start-up and then every ``REDISPATCH_AFTER`` seconds, so a run
    parked by a worker that lacks its version waits at most that long for a worker
    that has it, even one that started before the run was parked.
    """

    def __init__(self, nodename: str, interval: float) -> None:
        super().__init__(name="continuum-versions", daemon=True)
        self.nodename = nodename
        self.interval = interval
        self._stopping = threading.Event()

    def beat(self) -> None:
        from .versions import register_worker

        try:
            register_worker(self.nodename, queue=own_queue(self.nodename))
        except Exception:
            logger.exception("registering the workflow versions of worker %s", self.nodename)
        finally:
            # No connection is left open in the worker's main process for its pool to inherit.
            connections[app_settings().DATABASE].close()

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        self._stopping.set()


_keeper: list[VersionKeeper | Sweeper] = []


@celeryd_after_setup.connect
def _consume_own_queue(sender: str, instance: Any, **kwargs: Any) -> None:
    instance.app.amqp.queues.select_add(own_queue(sender))


@worker_ready.connect
def _register_versions(sender: Any, **kwargs: Any) -> None:
    if _keeper:  # the consumer restarted (a lost broker connection): the keeper still runs
        return
    conf = app_settings()
    keeper = VersionKeeper(sender.hostname, float(conf.REDISPATCH_AFTER))
    keeper.beat()  # before the worker reports ready
    keeper.start()
    _keeper.append(keeper)
    if conf.SWEEP_IN_WORKERS:
        sweeper = Sweeper(float(conf.SWEEP_INTERVAL))
        sweeper.start()
        _keeper.append(sweeper)


@worker_shutdown.connect
def _stop_keeper(**kwargs: Any) -> None:
    while _keeper:
        _keeper.pop().stop()
