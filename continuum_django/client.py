"""The client API: start runs, signal and cancel them, wait for their results."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from . import lifecycle
from .conf import app_settings
from .engine import codec
from .engine.definitions import (
    START_FLOW_OPTIONS,
    Duration,
    WorkflowDefinition,
    bind_arguments,
    check_signal,
    check_timeout,
    registry,
    unexpected_signal,
)
from .engine.events import Event
from .engine.exceptions import (
    ResultTimeout,
    RunNotFound,
    WorkflowCancelled,
    run_failure,
)
from .engine.flow import ConcurrencyKey
from .engine.journal import NewRun
from .engine.local import new_run
from .engine.updates import UPDATE_PREFIX
from .journal import internals
from .journal.base import RUN_ENDED
from .journal.lean import statements
from .models import TERMINAL, RunStatus, Signal, WorkflowRun
from .worker import runtime

logger = logging.getLogger("continuum")


# Longest cancel reason kept; the admin's cancel form allows the same.
MAX_CANCEL_REASON_CHARS = 500


def _max_length(model: type[Any], field: str) -> int:
    length: int = model._meta.get_field(field).max_length
    return length


def check_text(value: Any, field: str, *, max_length: int, required: bool = True) -> str:
    """``value`` if it is a str the database can store in ``field``; else a `ValueError`
    that names the field, what was wrong and the limit."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a str, not {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{field} must not be empty")
    if len(value) > max_length:
        raise ValueError(f"{field} is {len(value)} characters long, over the limit of {max_length}")
    problem = codec.string_problem(value)
    if problem:
        raise ValueError(f"{field} {problem}")
    return value


def check_start_options(
    *,
    idempotency_key: str | None = None,
    namespace: str = "default",
    attributes: dict[str, Any] | None = None,
    timeout: Duration | None = None,
    **flow: Any,
) -> None:
    """Refuse a bad start option with a `ValueError` naming it (``attributes`` are checked
    by the codec when the run starts, the limits in ``flow`` by `start_flow`);
    `WorkflowDefinition.options` calls it too."""
    unknown = sorted(set(flow) - set(START_FLOW_OPTIONS))
    if unknown:
        raise TypeError(f"unknown start option {unknown[0]!r}")
    check_timeout(timeout)
    if idempotency_key is not None:
        limit = _max_length(WorkflowRun, "idempotency_key")
        check_text(idempotency_key, "idempotency_key", max_length=limit)
    check_text(namespace, "namespace", max_length=_max_length(WorkflowRun, "namespace"))
    if attributes is not None and not isinstance(attributes, dict):
        raise ValueError(f"attributes must be a dict, not {type(attributes).__name__}")


def _check_signal_ids(name: Any, dedupe_key: Any) -> None:
    check_text(name, "signal name", max_length=_max_length(Signal, "name"))
    if name.startswith(UPDATE_PREFIX):
        raise ValueError(
            f"signal name {name!r} starts with {UPDATE_PREFIX!r}, which update requests use: "
            "send updates with continuum_django.update(), or rename the signal"
        )
    if dedupe_key is not None:
        check_text(dedupe_key, "dedupe_key", max_length=_max_length(Signal, "dedupe_key"))


def _run_id(run_id: Any) -> str:
    try:
        return str(uuid.UUID(str(run_id)))
    except ValueError:
        raise RunNotFound(f"{run_id!r} is not a run id (a UUID)", run_id=str(run_id)) from None


@dataclass(frozen=True, slots=True)
class RunHandle:
    """A reference to one run."""

    id: str

    def get(self) -> WorkflowRun:
        return get_run(self.id)

    def status(self) -> str:
        return self.get().status

    def history(self) -> list[Event]:
        return runtime().journal.history(self.id)

    def signal(self, name: str, payload: Any = None, dedupe_key: str | None = None) -> None:
        signal(self.id, name, payload, dedupe_key=dedupe_key)

    def cancel(self, reason: str = "", terminate: bool = False) -> None:
        cancel(self.id, reason=reason, terminate=terminate)

    def result(self, timeout: float | None = None) -> Any:
        return result(self.id, timeout=timeout)

    def state(self, *, redact: bool = False) -> dict[str, Any]:
        return state(self.id, redact=redact)

    def update(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | dt.timedelta | None = None,
        request_id: str | None = None,
    ) -> Any:
        from .updates import update

        return update(self.id, name, payload, timeout=timeout, request_id=request_id)


def start(
    workflow: WorkflowDefinition[..., Any] | str,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    namespace: str = "default",
    attributes: dict[str, Any] | None = None,
    timeout: Duration | None = None,
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    priority: int | None = None,
) -> RunHandle:
    """Start a run in the caller's transaction; its first advance is sent on commit.

    With ``idempotency_key``, a run already started under that key (in this namespace,
    for this workflow) is returned instead of a new one. With ``timeout`` (seconds or a
    timedelta), the run is ended as failed with `WorkflowTimedOut` if it has not
    finished that long after it was stored (a deadline its successors keep).
    ``concurrency``, ``concurrency_key`` and ``priority`` override the workflow's start
    limits for this start: over its limit, the run is stored but waits for a live run of
    its key to end (see docs/guides/flow-control.md).
    """
    definition = _definition(workflow)
    new = _new_run(
        definition, args, kwargs, idempotency_key, namespace, attributes, timeout,
        concurrency=concurrency, concurrency_key=concurrency_key, priority=priority,
    )  # fmt: skip
    conf = app_settings()
    engine = runtime()
    run_id, created, dispatch = engine.journal.create_run(new)
    if not created:
        _warn_reused_key(run_id, new.idempotency_key, new.input)
    engine.dispatcher.send(dispatch)
    if created:
        _announce_started(conf.DATABASE, run_id, new)
    return RunHandle(run_id)


def _definition(workflow: WorkflowDefinition[..., Any] | str) -> WorkflowDefinition[..., Any]:
    if isinstance(workflow, WorkflowDefinition):
        return workflow
    limit = _max_length(WorkflowRun, "workflow_name")
    return registry.workflow(check_text(workflow, "workflow name", max_length=limit))


def _new_run(
    definition: WorkflowDefinition[..., Any],
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    idempotency_key: str | None,
    namespace: str,
    attributes: dict[str, Any] | None,
    timeout: Duration | None = None,
    *,
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    priority: int | None = None,
) -> NewRun:
    """The run `start` (or `signal_with_start`) would insert, every input checked, its
    start limits (the workflow's declared ones, with these overrides) evaluated."""
    flow = definition.start_flow(
        concurrency=concurrency, concurrency_key=concurrency_key, priority=priority
    )
    _check_start(definition, args, kwargs)
    check_start_options(
        idempotency_key=idempotency_key, namespace=namespace, attributes=attributes,
        timeout=timeout,
    )  # fmt: skip
    settings = app_settings()
    new = new_run(
        definition,
        args,
        kwargs,
        idempotency_key=idempotency_key,
        namespace=namespace,
        attributes=attributes,
        timeout=timeout,
        max_payload_bytes=settings.MAX_PAYLOAD_BYTES,
        max_payload_depth=settings.max_payload_depth,
        flow=flow,
    )
    if settings.OPENTELEMETRY:
        from .tracing import start_context

        new = replace(new, trace=start_context() or None)
    return new


def signal_with_start(
    workflow: WorkflowDefinition[..., Any] | str,
    signal: str,
    payload: Any = None,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    namespace: str = "default",
    attributes: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    timeout: Duration | None = None,
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    priority: int | None = None,
) -> RunHandle:
    """Deliver ``signal`` to the run holding ``idempotency_key``, starting that run first
    when none does; both in the caller's transaction, atomically (the first advance is
    sent on commit). Concurrent calls with one key make one run and deliver every signal.

    The key keeps `start`'s meaning: it names one run for as long as the run is kept. So
    when that run has ended, nothing is started and `RunNotActive` is raised (a continued
    run's signal goes to its chain's live tip, as `signal` sends it).
    """
    definition = _definition(workflow)
    if idempotency_key is None:
        raise ValueError(
            "signal_with_start needs an idempotency_key: it names the run to signal or start"
        )
    new = _new_run(
        definition, args, kwargs, idempotency_key, namespace, attributes, timeout,
        concurrency=concurrency, concurrency_key=concurrency_key, priority=priority,
    )  # fmt: skip
    encoded = _signal_payload(signal, payload, dedupe_key)
    check_signal(definition, signal, codec.decode(encoded))
    conf = app_settings()
    engine = runtime()
    run_id, created, dispatch = engine.journal.signal_with_start(new, signal, encoded, dedupe_key)
    engine.dispatcher.send(dispatch)
    if created:
        _announce_started(conf.DATABASE, run_id, new)
    lifecycle.after_commit(conf.DATABASE, lifecycle.signal_sent, Signal, run_id=run_id, name=signal)
    return RunHandle(run_id)


def _announce_started(using: str, run_id: str, new: NewRun) -> None:
    """`lifecycle.run_started` for a run this call created, once its transaction commits."""
    lifecycle.after_commit(
        using, lifecycle.run_started, WorkflowRun,
        run_id=run_id, workflow=new.workflow_name, version=new.version,
    )  # fmt: skip


def _signal_payload(name: Any, payload: Any, dedupe_key: Any) -> Any:
    """The signal's payload in the codec's form, its name and dedupe key checked."""
    _check_signal_ids(name, dedupe_key)
    settings = app_settings()
    return codec.encode(
        payload,
        what=f"payload of signal {name!r}",
        max_bytes=settings.MAX_PAYLOAD_BYTES,
        max_depth=settings.max_payload_depth,
    )


def _check_start(
    definition: WorkflowDefinition[..., Any],
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any] | None,
) -> None:
    """Refuse, before anything is stored, a start that could only fail later."""
    from .checks import CELERY_APP_FIX, celery_app_problem

    bind_arguments(definition, args, dict(kwargs or {}))
    problem = celery_app_problem()
    if problem is not None:
        raise ImproperlyConfigured(f"{problem} {CELERY_APP_FIX} (continuum.E020).")


def _warn_reused_key(run_id: str, key: str | None, given: dict[str, Any]) -> None:
    """The existing run is returned whatever the arguments (SPEC §4); different ones are
    most likely a key reused by mistake, so say so."""
    # The arguments themselves are not logged: they may hold what REDACT hides.
    runs = WorkflowRun.objects.using(app_settings().DATABASE).filter(pk=run_id)
    if runs.values_list("input", flat=True).first() != given:
        logger.warning(
            "idempotency key %r is reused with different arguments: start() returns the "
            "existing run %s, which keeps the arguments it was started with; use a new key "
            "to start another run",
            key,
            run_id,
        )


def signal(run_id: Any, name: str, payload: Any = None, dedupe_key: str | None = None) -> None:
    """Deliver a signal to the run's mailbox; a repeated ``dedupe_key`` is delivered once.

    Given any run id of a continue_as_new chain, the signal goes to the chain's live tip.
    Raises `SignalRejected` when the workflow's signal contract refuses it.
    """
    encoded = _signal_payload(name, payload, dedupe_key)
    tip = _tip(run_id)
    if (tip.workflow_name, tip.workflow_version) in registry.workflows:
        definition = registry.workflow(tip.workflow_name, tip.workflow_version)
        check_signal(definition, name, codec.decode(encoded))
        unexpected = unexpected_signal(definition, name)
        if unexpected is not None:
            logger.warning("signal to run %s: %s", tip.id, unexpected)
    engine = runtime()
    engine.dispatcher.send(
        engine.journal.deliver_signal(_run_id(run_id), name, encoded, dedupe_key)
    )
    lifecycle.after_commit(
        app_settings().DATABASE, lifecycle.signal_sent, Signal, run_id=str(tip.id), name=name
    )


def cancel(run_id: Any, reason: str = "", terminate: bool = False) -> None:
    """Ask the run to cancel (the workflow may clean up); ``terminate`` ends it at once."""
    check_text(reason, "cancel reason", max_length=MAX_CANCEL_REASON_CHARS, required=False)
    engine = runtime()
    engine.dispatcher.send(engine.journal.request_cancel(_run_id(run_id), reason, terminate))
    lifecycle.after_commit(
        app_settings().DATABASE, lifecycle.cancel_requested, WorkflowRun,
        run_id=str(run_id), reason=reason, terminate=terminate,
    )  # fmt: skip


def state(run_id: Any, *, redact: bool = False) -> dict[str, Any]:
    """The last value of each key the run published (`WorkflowContext.publish`), decoded,
    read from the run's row without replaying it. Given any run id of a continue_as_new
    chain, the chain's live tip answers (it carries its predecessor's state over).

    With ``redact``, the state is passed through ``CONTINUUM["REDACT"]`` first, as the
    admin shows it: for showing it to people rather than using it.
    """
    values = _tip(run_id).state
    if redact:
        from .redaction import redact as hide

        shown = hide(values)
        return shown if isinstance(shown, dict) else {}
    return values


def get_run(run_id: Any) -> WorkflowRun:
    """The `WorkflowRun` with exactly this id."""
    run = WorkflowRun.objects.using(app_settings().DATABASE).filter(pk=_run_id(run_id)).first()
    if run is None:
        raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
    return run


def _tip(run_id: Any) -> WorkflowRun:
    """The live end of the run's continue_as_new chain (the run itself when none)."""
    return _chain_tip(get_run(run_id))


def _chain_tip(run: WorkflowRun) -> WorkflowRun:
    """The live end of the continue_as_new chain that ``run`` belongs to, from ``run`` on."""
    runs = WorkflowRun.objects.using(app_settings().DATABASE)
    while run.status == RunStatus.CONTINUED:
        successor = runs.filter(continued_from=run).first()
        if successor is None:  # the successor is inserted with the continue; never missing
            break
        run = successor
    return run


# Columns `result()` does not read: left out of its polling read (they load if touched).
_NOT_READ_BY_RESULT = ("input", "attributes", "published_state", "park_detail", "version_hash")


def _tip_outcome(run_id: Any) -> WorkflowRun:
    """`_tip` as `result()` reads it on every wake-up: one compiled statement for the run
    itself (a QuerySet costs the caller several times as much CPU), the chain walk only
    once the run has continued as new."""
    found = statements(app_settings().DATABASE).lock(
        WorkflowRun, _run_id(run_id), for_update=False, defer=_NOT_READ_BY_RESULT
    )
    if found is None:
        raise RunNotFound(f"no run has the id {run_id}", run_id=str(run_id))
    return _chain_tip(found[0])


def result(run_id: Any, timeout: float | None = None) -> Any:
    """Wait for the run (the tip of its continue_as_new chain) to finish; return its result.

    Raises `WorkflowFailed` (`WorkflowTimedOut` for a run ended at its deadline),
    `WorkflowCancelled`, or `ResultTimeout` after ``timeout`` seconds.
    On Postgres, outside a transaction, it sleeps until the run's end is announced (LISTEN);
    elsewhere it polls.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with _end_listener() as wait:  # listening first: no end announced after a read is missed
        while True:
            run = _tip_outcome(run_id)
            if run.status in TERMINAL:
                return _outcome(run)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ResultTimeout(
                    f"run {run.id} is still {run.status} after {timeout} seconds",
                    run_id=str(run.id),
                )
            # A notice is a hint (any database role may send one): the loop reads the run.
            wait(str(run.chain_root_id or run.id), left)


def _outcome(run: WorkflowRun) -> Any:
    if run.status == RunStatus.FAILED:
        raise run_failure(str(run.id), run.error or {})
    if run.status == RunStatus.CANCELLED:
        raise WorkflowCancelled(f"run {run.id} was cancelled", run_id=str(run.id))
    return codec.decode(run.result)


@contextmanager
def _end_listener() -> Iterator[Callable[[str, float | None], None]]:
    """A function that waits, at most the given seconds, until a run of the given chain may
    have ended: woken by Postgres NOTIFY (`end_notice`, naming the chain) when possible, by
    a short, growing sleep otherwise. Either way the caller reads the run to know."""
    connection = connections[app_settings().DATABASE]
    if connection.vendor != "postgresql" or internals.in_atomic_block(connection):
        delays = iter([0.005, 0.01, 0.02, 0.03, 0.04])

        def poll(chain: str, left: float | None) -> None:
            delay = next(delays, 0.05)
            time.sleep(delay if left is None else max(0.0, min(delay, left)))

        yield poll
        return
    with connection.cursor() as cursor:
        cursor.execute(f"LISTEN {RUN_ENDED}")
    raw = internals.raw(connection)

    def listen(chain: str, left: float | None) -> None:
        # Bounded, so that a notification missed for any reason costs at most a second.
        for note in raw.notifies(timeout=min(1.0, left if left is not None else 1.0)):
            try:
                notice = json.loads(note.payload)
            except ValueError:
                continue  # not ours: someone else notified on the channel
            if isinstance(notice, dict) and notice.get("chain") == chain:
                return

    try:
        yield listen
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"UNLISTEN {RUN_ENDED}")
