"""Flow control: an activity's (or a workflow start's) concurrency, concurrency key, rate
limit and priority.

The options are checked when the activity is declared; the key is evaluated from the call's
arguments when a workflow schedules the activity (so it is deterministic on replay) and
travels in the ``activity_scheduled`` payload. The journal enforces the limits when an
attempt is claimed (see ``continuum_django.journal.flow``). A workflow's limits work the
same way on its starts: the key is evaluated from the start's arguments and travels in the
``run_started`` payload (see `start_flow` and ``continuum_django.journal.starts_flow``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .exceptions import ContinuumError

# A concurrency key: the name of one of the activity's parameters, or a function of its
# arguments (called with them) returning the key.
ConcurrencyKey = str | Callable[..., Any]

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
MAX_KEY_CHARS = 255


class FlowControlError(ContinuumError, ValueError):
    """An activity's flow-control options are malformed, or its concurrency key could not be
    evaluated from a call's arguments."""


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` attempts per ``seconds``, spaced evenly (one every ``interval`` seconds)."""

    count: int
    seconds: float

    @property
    def interval(self) -> float:
        return self.seconds / self.count

    def to_json(self) -> list[float]:
        return [self.count, self.seconds]


def parse_rate(value: str, *, what: str = "rate_limit") -> Rate:
    """``"100/m"`` (also ``/s``, ``/h``, ``/d`` and ``"5/10s"``) as a `Rate`."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None or int(match[1]) <= 0 or match[2] == "0":
        raise FlowControlError(
            f"{what} must look like '100/m' (a positive count per s, m, h or d; '5/10s' for "
            f"5 per 10 seconds), not {value!r}"
        )
    return Rate(int(match[1]), int(match[2] or 1) * _PERIODS[match[3]])


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowControl:
    """An activity's flow-control options (all optional)."""

    concurrency: int | None = None
    concurrency_key: ConcurrencyKey | None = None
    rate_limit: Rate | None = None
    priority: int = 0

    @property
    def limited(self) -> bool:
        """Whether attempts may have to wait for a limit."""
        return self.concurrency is not None or self.rate_limit is not None

    def __bool__(self) -> bool:
        return self.limited or self.priority != 0

    def payload(self, fn: Callable[..., Any], name: str, args: Any, kwargs: Any) -> dict[str, Any]:
        """What the ``activity_scheduled`` event records: the limits and the evaluated key."""
        payload: dict[str, Any] = {"priority": self.priority}
        if self.limited:
            payload["key"] = self._key(fn, name, args, kwargs)
            payload["concurrency"] = self.concurrency
            payload["rate"] = self.rate_limit.to_json() if self.rate_limit else None
        return payload

    def start_payload(
        self, fn: Callable[..., Any], name: str, args: Any, kwargs: Any
    ) -> dict[str, Any] | None:
        """What the ``run_started`` event of a start of workflow ``name`` (``fn(ctx, ...)``)
        records: its concurrency limit, evaluated key and priority; None when it has no
        limit (a priority alone orders nothing: only waiting starts are ordered)."""
        if self.concurrency is None:
            return None
        return {
            "concurrency": self.concurrency,
            "key": self._key(fn, name, args, kwargs, kind="workflow", skip=1),
            "priority": self.priority,
        }

    def _key(
        self,
        fn: Callable[..., Any],
        name: str,
        args: Any,
        kwargs: Any,
        *,
        kind: str = "activity",
        skip: int = 0,
    ) -> str:
        """The key of a call of ``fn`` with ``args``/``kwargs``; ``skip``: leading parameters
        the call does not pass (a workflow's ``ctx``)."""
        key = self.concurrency_key
        if key is None:
            return ""
        try:
            if callable(key):
                value = key(*args, **kwargs)
            else:
                bound = inspect.signature(fn).bind_partial(*[None] * skip, *args, **kwargs)
                if key not in bound.arguments:
                    raise FlowControlError(
                        f"{kind} {name!r} takes its concurrency key from argument {key!r}, "
                        "which this call did not pass",
                        **{kind: name},
                    )
                value = bound.arguments[key]
        except FlowControlError:
            raise
        except Exception as exc:
            raise FlowControlError(
                f"the concurrency key of {kind} {name!r} could not be evaluated from the "
                f"call's arguments: {type(exc).__name__}: {exc}",
                **{kind: name},
            ) from exc
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_KEY_CHARS:
            raise FlowControlError(
                f"the concurrency key of {kind} {name!r} is {len(text)} characters long; "
                f"keep it under {MAX_KEY_CHARS}",
                **{kind: name},
            )
        return text


NO_FLOW_CONTROL = FlowControl()


def flow_control(
    fn: Callable[..., Any],
    name: str,
    *,
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    rate_limit: str | None = None,
    priority: int | None = None,
    base: FlowControl | None = None,
    kind: str = "activity",
) -> FlowControl:
    """Check the options of activity ``name`` (``fn``) and return them, over ``base``
    (``kind="workflow"``: of a workflow's starts)."""
    base = base or NO_FLOW_CONTROL
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise FlowControlError(
            f"concurrency of {kind} {name!r} must be a positive int, not {concurrency!r}"
        )
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise FlowControlError(f"priority of {kind} {name!r} must be an int, not {priority!r}")
    if isinstance(concurrency_key, str):
        parameters = inspect.signature(fn).parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
        if concurrency_key not in parameters and not takes_any:
            raise FlowControlError(
                f"concurrency_key of {kind} {name!r} names {concurrency_key!r}, which is not "
                f"one of its parameters ({', '.join(parameters) or 'none'}); give a parameter "
                "name or a function of the arguments"
            )
    elif concurrency_key is not None and not callable(concurrency_key):
        raise FlowControlError(
            f"concurrency_key of {kind} {name!r} must be a parameter name or a function of "
            f"the arguments, not {concurrency_key!r}"
        )
    merged = FlowControl(
        concurrency=concurrency if concurrency is not None else base.concurrency,
        concurrency_key=concurrency_key if concurrency_key is not None else base.concurrency_key,
        rate_limit=(
            parse_rate(rate_limit, what=f"rate_limit of {kind} {name!r}")
            if rate_limit is not None
            else base.rate_limit
        ),
        priority=priority if priority is not None else base.priority,
    )
    if merged.concurrency_key is not None and not merged.limited:
        raise FlowControlError(
            f"{kind} {name!r} has a concurrency_key but no concurrency or rate_limit "
            "for it to limit"
        )
    return merged
