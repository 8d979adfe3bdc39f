"""`@workflow` and `@activity`: the decorators, their definitions and the name registry."""

from __future__ import annotations

import ast
import contextvars
import datetime as dt
import hashlib
import inspect
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from .exceptions import (
    InvalidTimeout,
    RegistrationError,
    SignalRejected,
    UnknownActivity,
    UnknownWorkflow,
    WorkflowUsageError,
)
from .flow import NO_FLOW_CONTROL, ConcurrencyKey, FlowControl, flow_control
from .lint import RULE_IDS, LintFinding, lint_workflow, signal_names_waited
from .retry import RetryPolicy
from .schedules import At, Cron, Every

if TYPE_CHECKING:
    from .context import WorkflowContext

P = ParamSpec("P")
R = TypeVar("R")
V = TypeVar("V", bound=Callable[..., Any])

Duration = float | int | dt.timedelta

# Set while workflow code runs, so a direct activity call can be refused.
in_workflow: contextvars.ContextVar[bool] = contextvars.ContextVar("in_workflow", default=False)


def to_seconds(value: Duration | None, *, what: str = "duration") -> float | None:
    """Seconds from an int, a float or a timedelta; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, not {value!r}")
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {seconds}")
    return seconds


# The longest run timeout taken: a deadline further off is a mistake (and would overflow).
MAX_RUN_TIMEOUT = dt.timedelta(days=36_500)


def check_timeout(value: Duration | None) -> float | None:
    """A run's ``timeout`` option in seconds (None: no deadline); `InvalidTimeout` (also a
    `ValueError`) naming what was wrong unless it is a positive, finite duration."""
    if value is None:
        return None
    try:
        seconds = to_seconds(value, what="timeout")
    except (TypeError, ValueError) as exc:
        raise InvalidTimeout(str(exc), timeout=repr(value)) from None
    assert seconds is not None
    if not 0 < seconds <= MAX_RUN_TIMEOUT.total_seconds():
        raise InvalidTimeout(
            f"timeout must be a positive duration of at most {MAX_RUN_TIMEOUT.days} days, "
            f"got {value!r}",
            timeout=repr(value),
        )
    return seconds


def source_hash(fn: Callable[..., Any]) -> str:
    """A hash of a function's code that ignores formatting, comments and docstrings.

    The decorators and the function's own name are left out too: renaming the Python
    function of a workflow registered with ``name=`` does not change its code.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return hashlib.sha256(fn.__code__.co_code).hexdigest()[:16]
    for top in tree.body[:1]:
        if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef):
            top.name = ""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body.pop(0)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.decorator_list = []
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityDefinition(Generic[P, R]):
    """A registered activity. Called outside a workflow, it is the plain function."""

    fn: Callable[P, R]
    name: str
    retry: RetryPolicy | None = None
    timeout: float | None = None
    schedule_to_close_timeout: float | None = None
    heartbeat_timeout: float | None = None
    queue: str | None = None
    wants_context: bool = False
    # Run the body inside the transaction that journals its end (see `activity`).
    transactional: bool = False
    # The database alias a transactional body writes to (None: the journal's).
    using: str | None = None
    flow: FlowControl = NO_FLOW_CONTROL

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if in_workflow.get():
            raise WorkflowUsageError(
                f"activity {self.name!r} was called directly inside workflow code, where it would "
                f"run again on every replay; call ctx.activity({self.fn.__name__}, ...) instead"
            )
        return self.fn(*args, **kwargs)

    def with_options(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: Duration | None = None,
        schedule_to_close_timeout: Duration | None = None,
        heartbeat_timeout: Duration | None = None,
        queue: str | None = None,
        concurrency: int | None = None,
        concurrency_key: ConcurrencyKey | None = None,
        rate_limit: str | None = None,
        priority: int | None = None,
    ) -> ActivityDefinition[P, R]:
        """This activity with per-call overrides (the registered one is unchanged)."""
        changes: dict[str, Any] = {}
        if (concurrency, concurrency_key, rate_limit, priority) != (None, None, None, None):
            changes["flow"] = flow_control(
                self.fn,
                self.name,
                concurrency=concurrency,
                concurrency_key=concurrency_key,
                rate_limit=rate_limit,
                priority=priority,
                base=self.flow,
            )
            _check_flow_alone(self.name, changes["flow"], self.transactional)
        if retry is not None:
            changes["retry"] = retry
        if timeout is not None:
            changes["timeout"] = to_seconds(timeout, what="timeout")
        if schedule_to_close_timeout is not None:
            changes["schedule_to_close_timeout"] = to_seconds(
                schedule_to_close_timeout, what="schedule_to_close_timeout"
            )
        if heartbeat_timeout is not None:
            if self.transactional:
                _check_transactional(self.name, self.fn, heartbeat_timeout)
            changes["heartbeat_timeout"] = to_seconds(heartbeat_timeout, what="heartbeat_timeout")
        if queue is not None:
            changes["queue"] = queue
        return replace(self, **changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowDefinition(Generic[P, R]):
    """A registered workflow: ``fn(ctx, *args, **kwargs)`` with its durable identity."""

    fn: Callable[Concatenate[WorkflowContext, P], R]
    name: str
    version: int = 1
    version_hash: str = ""
    signals: dict[str, Any] | None = None
    # Determinism findings not waived, recorded at registration; Django's checks report them.
    lint_findings: tuple[LintFinding, ...] = ()
    # The names its code waits for with literal ``wait_signal("name")`` calls; None when
    # unknown (no source, or a name computed at run time).
    waited_signals: frozenset[str] | None = None
    # Update name -> the check `update()` runs in the caller's process before sending.
    # Filled after registration (`update_validator`): not part of equality or the hash.
    update_validators: dict[str, Callable[[Any], Any]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # Declared with ``@workflow(schedule=...)``; synced to `Schedule` rows on migrate.
    schedules: tuple[Cron | Every, ...] = ()
    # Limits on its live runs (``@workflow(concurrency=...)``), admitted by the journal.
    flow: FlowControl = NO_FLOW_CONTROL

    def __call__(self, ctx: WorkflowContext, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(ctx, *args, **kwargs)

    def schedule(
        self,
        spec: Cron | Every | At | None = None,
        *,
        name: str | None = None,
        namespace: str = "default",
        cron: str | None = None,
        tz: str = "UTC",
        every: dt.timedelta | float | None = None,
        **policy: Any,
    ) -> Any:
        """Create a schedule of this workflow at run time (see
        `continuum_django.schedules.create`); returns its `Schedule` row. Give a spec, or
        ``cron=`` (with ``tz=``) or ``every=`` and the spec's options (``args``,
        ``kwargs``, ``overlap``, ``catchup``, ``catchup_window``)."""
        from continuum_django.schedules import create

        if spec is None:
            if (cron is None) == (every is None):
                raise TypeError("schedule() takes a spec, or one of cron= and every=")
            spec = Cron(cron, tz=tz, **policy) if cron is not None else Every(every, **policy)  # type: ignore[arg-type]
        elif cron is not None or every is not None or policy:
            raise TypeError("schedule() takes a spec or cron=/every= with options, not both")
        return create(self, spec, name=name, namespace=namespace)

    def schedule_at(self, when: dt.datetime, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Start one run of this workflow at ``when`` (an aware datetime): a one-shot
        schedule; returns its `Schedule` row."""
        from continuum_django.schedules import schedule_at

        return schedule_at(self, when, args, kwargs)

    def start(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Start a run of this workflow (see `continuum_django.start`); returns a `RunHandle`."""
        from continuum_django.client import start

        return start(self, args=list(args), kwargs=dict(kwargs))

    def signal_with_start(
        self, signal: str, payload: Any, *args: Any, idempotency_key: str, **kwargs: Any
    ) -> Any:
        """Signal the run holding ``idempotency_key``, starting it with these arguments
        when no run does (see `continuum_django.signal_with_start`); returns a `RunHandle`."""
        from continuum_django.client import signal_with_start

        return signal_with_start(
            self, signal, payload, list(args), dict(kwargs), idempotency_key=idempotency_key
        )

    def options(self, **options: Any) -> StartOptions[P, R]:
        """Start options (``idempotency_key``, ``namespace``, ``attributes``, ``timeout``,
        and ``concurrency``, ``concurrency_key``, ``priority`` over the declared limits)
        for `start`; a bad one is refused here, with a `ValueError` (an unknown one with a
        `TypeError`). Passed to ``ctx.child`` / ``ctx.start_child``, only ``timeout``."""
        check_timeout(options.get("timeout"))
        self.start_flow(**{k: options[k] for k in START_FLOW_OPTIONS if k in options})
        if set(options) - {"timeout", *START_FLOW_OPTIONS}:  # checked against the run's columns
            from continuum_django.client import check_start_options

            check_start_options(**options)
        return StartOptions(workflow=self, options=options)

    def start_flow(
        self,
        *,
        concurrency: int | None = None,
        concurrency_key: ConcurrencyKey | None = None,
        priority: int | None = None,
    ) -> FlowControl:
        """This workflow's start limits with one start's overrides, checked."""
        return flow_control(
            self.fn,
            self.name,
            concurrency=concurrency,
            concurrency_key=concurrency_key,
            priority=priority,
            base=self.flow,
            kind="workflow",
        )

    def update_validator(self, name: str) -> Callable[[V], V]:
        """Register the decorated ``fn(payload)`` as the validator of updates called ``name``.

        `continuum_django.update` calls it in the caller's process before anything is
        journaled; if it raises, the caller gets `UpdateRejected` and nothing is stored.
        """
        if not isinstance(name, str) or not name:
            raise RegistrationError(f"update_validator needs an update name, not {name!r}")

        def register(fn: V) -> V:
            if not callable(fn):
                raise RegistrationError(f"the validator of update {name!r} must be callable")
            if name in self.update_validators:
                raise RegistrationError(
                    f"workflow {self.name!r} already has a validator for update {name!r}"
                )
            self.update_validators[name] = fn
            return fn

        return register


@dataclass(frozen=True, slots=True)
class StartOptions(Generic[P, R]):
    workflow: WorkflowDefinition[P, R]
    options: dict[str, Any] = field(default_factory=dict)

    def start(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        from continuum_django.client import start

        return start(self.workflow, args=list(args), kwargs=dict(kwargs), **self.options)

    def signal_with_start(self, signal: str, payload: Any, *args: Any, **kwargs: Any) -> Any:
        """`WorkflowDefinition.signal_with_start` with these options (``idempotency_key``
        among them)."""
        from continuum_django.client import signal_with_start

        return signal_with_start(
            self.workflow, signal, payload, list(args), dict(kwargs), **self.options
        )


# The start options that set a run's limits (`WorkflowDefinition.start_flow`).
START_FLOW_OPTIONS = ("concurrency", "concurrency_key", "priority")


def _is_types(rule: Any) -> bool:
    return isinstance(rule, type) or (
        isinstance(rule, tuple) and all(isinstance(t, type) for t in rule)
    )


def bind_arguments(
    definition: WorkflowDefinition[..., Any], args: Iterable[Any], kwargs: dict[str, Any]
) -> None:
    """Raise `TypeError` naming the workflow when ``args``/``kwargs`` do not fit its signature.

    Checked before anything is stored: otherwise the run would only fail on a worker.
    """
    try:
        signature = inspect.signature(definition.fn)
    except (TypeError, ValueError):  # a callable without a signature: nothing to check
        return
    try:
        signature.bind(None, *args, **kwargs)  # None stands for ctx
    except TypeError as exc:
        raise TypeError(
            f"workflow {definition.name!r} cannot take these arguments: {exc} "
            f"(its signature is {definition.fn.__name__}{signature})"
        ) from None


def unexpected_signal(definition: WorkflowDefinition[..., Any], name: str) -> str | None:
    """Why a signal called ``name`` is likely a mistake, or None.

    Only for workflows without a declared contract (``signals=``), whose code waits for
    known literal names only: a name it never waits for stays unread in the mailbox.
    """
    waited = definition.waited_signals
    if definition.signals is not None or waited is None or name in waited:
        return None
    expected = ", ".join(repr(n) for n in sorted(waited)) or "no signal"
    return (
        f"workflow {definition.name!r} never waits for a signal {name!r} (its code waits for "
        f"{expected}); the signal is kept in the run's mailbox but nothing reads it. Check the "
        "name, or declare the workflow's signals with @workflow(signals={...}) if it waits "
        "for this name in a helper"
    )


def check_signal(definition: WorkflowDefinition[..., Any], name: str, payload: Any) -> None:
    """Refuse a signal the workflow's contract (``@workflow(signals=...)``) does not accept."""
    if definition.signals is None:
        return
    if name not in definition.signals:
        accepted = ", ".join(sorted(definition.signals)) or "none"
        raise SignalRejected(
            f"workflow {definition.name!r} declares no signal {name!r}; it accepts: {accepted}",
            signal=name,
        )
    rule = definition.signals[name]
    if rule is None:
        return
    if _is_types(rule):
        if not isinstance(payload, rule):
            expected = " or ".join(
                t.__name__ for t in (rule if isinstance(rule, tuple) else (rule,))
            )
            raise SignalRejected(
                f"signal {name!r} of workflow {definition.name!r} takes a {expected} payload, "
                f"not {type(payload).__name__}",
                signal=name,
            )
        return
    try:
        accepted_payload = rule(payload)
    except (TypeError, ValueError) as exc:
        raise SignalRejected(
            f"signal {name!r} of workflow {definition.name!r} refused its payload: {exc}",
            signal=name,
        ) from None
    if accepted_payload is False:
        raise SignalRejected(
            f"signal {name!r} of workflow {definition.name!r} refused its payload", signal=name
        )


class Registry:
    """Workflows by ``(name, version)`` and activities by name, filled by the decorators."""

    def __init__(self) -> None:
        self.workflows: dict[tuple[str, int], WorkflowDefinition[..., Any]] = {}
        self.activities: dict[str, ActivityDefinition[..., Any]] = {}

    def add_workflow(self, definition: WorkflowDefinition[..., Any]) -> None:
        key = (definition.name, definition.version)
        existing = self.workflows.get(key)
        if existing is not None and _origin(existing.fn) != _origin(definition.fn):
            raise RegistrationError(
                f"workflow {definition.name!r} version {definition.version} is registered twice: "
                f"by {_origin(existing.fn)} and by {_origin(definition.fn)}; give one another "
                "name= or version="
            )
        self.workflows[key] = definition

    def add_activity(self, definition: ActivityDefinition[..., Any]) -> None:
        existing = self.activities.get(definition.name)
        if existing is not None and _origin(existing.fn) != _origin(definition.fn):
            raise RegistrationError(
                f"activity {definition.name!r} is registered twice: by {_origin(existing.fn)} "
                f"and by {_origin(definition.fn)}; give one of them another name="
            )
        self.activities[definition.name] = definition

    def workflow(self, name: str, version: int | None = None) -> WorkflowDefinition[..., Any]:
        """The workflow ``name`` at ``version`` (the newest when ``version`` is None)."""
        if version is not None:
            found = self.workflows.get((name, version))
            if found is None:
                raise UnknownWorkflow(
                    f"no workflow {name!r} version {version} is registered here; known: "
                    f"{self._known_workflows()}",
                    name=name,
                    version=version,
                )
            return found
        versions = [key[1] for key in self.workflows if key[0] == name]
        if not versions:
            raise UnknownWorkflow(
                f"no workflow is registered as {name!r}; known: {self._known_workflows()}",
                name=name,
            )
        return self.workflows[(name, max(versions))]

    def activity(self, name: str) -> ActivityDefinition[..., Any]:
        found = self.activities.get(name)
        if found is None:
            known = ", ".join(sorted(self.activities)) or "none"
            raise UnknownActivity(
                f"no activity is registered as {name!r}; known: {known}", name=name
            )
        return found

    def _known_workflows(self) -> str:
        return ", ".join(f"{n} v{v}" for n, v in sorted(self.workflows)) or "none"


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


registry = Registry()


@overload
def workflow(fn: Callable[Concatenate[WorkflowContext, P], R], /) -> WorkflowDefinition[P, R]: ...
@overload
def workflow(
    *,
    name: str | None = None,
    version: int = 1,
    signals: dict[str, Any] | None = None,
    waive: bool | Iterable[str] = (),
    schedule: Cron | Every | Iterable[Cron | Every] = (),
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    priority: int | None = None,
) -> Callable[[Callable[Concatenate[WorkflowContext, P], R]], WorkflowDefinition[P, R]]: ...
def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    version: int = 1,
    signals: dict[str, Any] | None = None,
    waive: bool | Iterable[str] = (),
    schedule: Cron | Every | Iterable[Cron | Every] = (),
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    priority: int | None = None,
) -> Any:
    """Register a workflow function ``fn(ctx, *args, **kwargs)``; usable bare or with options.

    ``version`` makes ``(name, version)`` the run's durable identity: several versions of
    one name may be registered side by side, and new runs start on the newest. ``waive``
    silences the determinism lint for this function: ``True`` for every rule, or rule ids
    such as ``("time.time", "orm")``. ``schedule``: one or more `Cron` / `Every` values
    that start the workflow by themselves, synced to schedule rows on ``migrate``.
    ``concurrency`` (per ``concurrency_key``: a parameter name or a function of the start's
    arguments) bounds the runs live at once; a start over it waits, stored, for a run to
    end, the waiting ones taken by ``priority`` then age (see docs/guides/flow-control.md).
    """
    schedules = _declared_schedules(schedule, name)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RegistrationError(f"workflow version must be a positive int, not {version!r}")
    waived = _waived_rules(waive)

    for signal, rule in (signals or {}).items():
        if not (rule is None or callable(rule) or _is_types(rule)):
            raise RegistrationError(
                f"signal {signal!r}: a contract entry is None (any payload), a type, a tuple of "
                f"types or a callable that checks the payload, not {rule!r}"
            )

    def register(fn: Callable[..., Any]) -> WorkflowDefinition[..., Any]:
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise RegistrationError(
                f"workflow {name or _origin(fn)!r} is an `async def`: workflow functions must "
                "be plain `def` (the engine replays them step by step and waits through "
                "ctx, not through await). Keep the workflow synchronous; an activity may be "
                "`async def`"
            )
        definition: WorkflowDefinition[..., Any] = WorkflowDefinition(
            fn=fn,
            name=name or _origin(fn),
            version=version,
            version_hash=source_hash(fn),
            signals=signals,
            lint_findings=tuple(f for f in lint_workflow(fn) if f.rule not in waived),
            waited_signals=signal_names_waited(fn),
            schedules=schedules,
            flow=flow_control(
                fn,
                name or _origin(fn),
                concurrency=concurrency,
                concurrency_key=concurrency_key,
                priority=priority,
                kind="workflow",
            ),
        )
        registry.add_workflow(definition)
        return definition

    return register(fn) if fn is not None else register


def _declared_schedules(
    schedule: Cron | Every | Iterable[Cron | Every], name: str | None
) -> tuple[Cron | Every, ...]:
    specs = (schedule,) if isinstance(schedule, Cron | Every | At) else tuple(schedule)
    for spec in specs:
        if not isinstance(spec, Cron | Every):
            raise RegistrationError(
                f"schedule= takes Cron(...) or Every(...) values, not {spec!r} (a one-shot "
                "start is made at run time with wf.schedule_at(when, ...))"
            )
    if len(specs) > 1 and sum(spec.name is None for spec in specs) > 1:
        raise RegistrationError(
            f"workflow {name or 'with several schedules'!r} declares {len(specs)} schedules; "
            "give each a name=, e.g. Cron('0 9 * * *', name='morning')"
        )
    return specs


def _waived_rules(waive: bool | Iterable[str]) -> frozenset[str]:
    if waive is True:
        return RULE_IDS
    if waive is False:
        return frozenset()
    if isinstance(waive, str):
        waive = (waive,)
    waived = frozenset(waive)
    unknown = sorted(waived - RULE_IDS)
    if unknown:
        raise RegistrationError(
            f"waive= names unknown lint rules {unknown}; known: {', '.join(sorted(RULE_IDS))}"
        )
    return waived


@overload
def activity(fn: Callable[P, R], /) -> ActivityDefinition[P, R]: ...
@overload
def activity(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: Duration | None = None,
    schedule_to_close_timeout: Duration | None = None,
    heartbeat_timeout: Duration | None = None,
    queue: str | None = None,
    transactional: bool = False,
    using: str | None = None,
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    rate_limit: str | None = None,
    priority: int | None = None,
) -> Callable[[Callable[P, R]], ActivityDefinition[P, R]]: ...
def activity(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: Duration | None = None,
    schedule_to_close_timeout: Duration | None = None,
    heartbeat_timeout: Duration | None = None,
    queue: str | None = None,
    transactional: bool = False,
    using: str | None = None,
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    rate_limit: str | None = None,
    priority: int | None = None,
) -> Any:
    """Register an activity; usable bare or with options. An ``async def`` activity runs on
    an event loop of its own in the worker (``asyncio.run``), one attempt at a time.

    ``transactional=True`` runs the body inside the database transaction that journals its
    end, on the journal's database: its ORM writes and its result commit together, or
    neither does. ``using`` names the database alias the body writes to, when the project
    routes models; it must be the journal's (``CONTINUUM["DATABASE"]``).
    """
    if using is not None and not transactional:
        raise RegistrationError(
            f"activity {name!r}: using= names the database of a transactional activity; "
            "add transactional=True, or leave using= out"
        )
    if using is not None and not (isinstance(using, str) and using):
        raise RegistrationError(
            f"activity {name!r}: using= must be a database alias, not {using!r}"
        )

    def register(fn: Callable[..., Any]) -> ActivityDefinition[..., Any]:
        if inspect.isasyncgenfunction(fn):
            raise RegistrationError(
                f"activity {name or _origin(fn)!r} is an async generator; an activity returns "
                "one value: make it `async def` returning it, or a plain `def`"
            )
        if transactional:
            _check_transactional(name or _origin(fn), fn, heartbeat_timeout)
        parameters = inspect.signature(fn).parameters
        flow = flow_control(
            fn,
            name or _origin(fn),
            concurrency=concurrency,
            concurrency_key=concurrency_key,
            rate_limit=rate_limit,
            priority=priority,
        )
        _check_flow_alone(name or _origin(fn), flow, transactional)
        definition: ActivityDefinition[..., Any] = ActivityDefinition(
            fn=fn,
            name=name or _origin(fn),
            retry=retry,
            timeout=to_seconds(timeout, what="timeout"),
            schedule_to_close_timeout=to_seconds(
                schedule_to_close_timeout, what="schedule_to_close_timeout"
            ),
            heartbeat_timeout=to_seconds(heartbeat_timeout, what="heartbeat_timeout"),
            queue=queue,
            wants_context="activity_context" in parameters,
            transactional=transactional,
            using=using,
            flow=flow,
        )
        registry.add_activity(definition)
        return definition

    return register(fn) if fn is not None else register


def _check_flow_alone(name: str, flow: FlowControl, transactional: bool) -> None:
    """Refuse limits on a transactional activity: its attempt runs in the transaction that
    journals its end, where a slot could be neither waited for nor handed on."""
    if transactional and flow.limited:
        raise RegistrationError(
            f"activity {name!r}: a transactional activity cannot take concurrency or "
            "rate_limit; limit the workflow's other activities, or drop transactional=True"
        )


def _check_transactional(
    name: str, fn: Callable[..., Any], heartbeat_timeout: Duration | None
) -> None:
    """Refuse what cannot run inside the transaction that journals the activity's end."""
    if inspect.iscoroutinefunction(fn):
        raise RegistrationError(
            f"activity {name!r} is transactional and `async def`: its ORM writes would run "
            "on another thread's connection, outside the transaction that journals its end. "
            "Make it a plain `def`"
        )
    if heartbeat_timeout is not None:
        raise RegistrationError(
            f"activity {name!r} is transactional and has a heartbeat_timeout: its heartbeats "
            "would stay inside its uncommitted transaction, unseen, so the timeout would fire "
            "anyway. Use timeout= (start-to-close) instead"
        )
