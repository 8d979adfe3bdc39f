"""App settings: the ``CONTINUUM`` dict merged over documented defaults, read lazily."""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from .engine.codec import DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT
from .engine.context import EngineConfig
from .engine.retry import RetryPolicy

DEFAULTS: dict[str, Any] = {
    "LEASE_SECONDS": 30.0,
    "SWEEP_INTERVAL": 1.0,
    "REDISPATCH_AFTER": 10.0,
    "QUARANTINE_AFTER": 5,
    "DEFAULT_QUEUE": "continuum",
    "DEFAULT_RETRY": {
        "max_attempts": 3,
        "initial_interval": 1.0,
        "backoff_coefficient": 2.0,
        "max_interval": 60.0,
        "jitter": 0.1,
    },
    "WORKER_ID": None,
    "MAX_PAYLOAD_BYTES": 1024 * 1024,
    "MAX_UNREAD_SIGNALS": 1000,
    "MAX_PAYLOAD_DEPTH": DEFAULT_MAX_DEPTH,
    "REDACT": None,
    "WORKFLOW_MODULES": None,
    "DETERMINISM_LINT": "warn",
    "DATABASE": "default",
    "BEAT": True,
    "SWEEP_IN_WORKERS": True,
    "OPENTELEMETRY": False,
    "PIPELINE": True,
    # How long ended runs are kept before `continuum_prune` may delete them (None: forever).
    "RETENTION": dt.timedelta(days=30),
    # Seconds a schedule's slot may be late and still count as on time (not missed).
    "SCHEDULE_GRACE": 60.0,
}


class Settings:
    """Typed access to ``settings.CONTINUUM``; unknown keys are refused by a system check."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"CONTINUUM has no setting {name!r}") from None

    @property
    def default_retry(self) -> RetryPolicy:
        value = self._values["DEFAULT_RETRY"]
        return value if isinstance(value, RetryPolicy) else RetryPolicy(**value)

    @property
    def worker_id(self) -> str:
        return self._values["WORKER_ID"] or f"{socket.gethostname()}:{os.getpid()}"

    @property
    def retention(self) -> Retention:
        return parse_retention(self._values["RETENTION"])

    @property
    def schedule_grace(self) -> dt.timedelta:
        grace = self._values["SCHEDULE_GRACE"]
        if isinstance(grace, dt.timedelta):
            grace = grace.total_seconds()
        if not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0:
            raise ImproperlyConfigured(
                f"CONTINUUM['SCHEDULE_GRACE'] is {grace!r}; use seconds (0 or more) or a timedelta"
            )
        return dt.timedelta(seconds=grace)

    @property
    def max_payload_depth(self) -> int:
        depth = self._values["MAX_PAYLOAD_DEPTH"]
        if not isinstance(depth, int) or not 0 < depth <= MAX_DEPTH_LIMIT:
            raise ImproperlyConfigured(
                f"CONTINUUM['MAX_PAYLOAD_DEPTH'] is {depth!r}; "
                f"use an int from 1 to {MAX_DEPTH_LIMIT}"
            )
        return depth

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            default_retry=self.default_retry,
            default_queue=self.DEFAULT_QUEUE,
            max_payload_bytes=self.MAX_PAYLOAD_BYTES,
            max_payload_depth=self.max_payload_depth,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """How long ended runs are kept: a default and per-workflow overrides (None: forever)."""

    default: dt.timedelta | None
    workflows: dict[str, dt.timedelta | None] = field(default_factory=dict)


def parse_retention(value: Any) -> Retention:
    """``CONTINUUM["RETENTION"]`` as a `Retention`; `ImproperlyConfigured` names what is wrong.

    Accepted: None (keep forever), seconds (int or float) or a timedelta (every workflow),
    or a dict of workflow name to one of those, with ``"default"`` for the rest.
    """
    if not isinstance(value, dict):
        return Retention(default=_duration(value, "CONTINUUM['RETENTION']"))
    workflows: dict[str, dt.timedelta | None] = {}
    for name, keep in value.items():
        if not isinstance(name, str) or not name:
            raise ImproperlyConfigured(
                f"CONTINUUM['RETENTION'] has the key {name!r}; keys are workflow names or 'default'"
            )
        workflows[name] = _duration(keep, f"CONTINUUM['RETENTION'][{name!r}]")
    default = workflows.pop("default") if "default" in value else DEFAULTS["RETENTION"]
    return Retention(default=default, workflows=workflows)


def _duration(value: Any, where: str) -> dt.timedelta | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        keep = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            keep = dt.timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise ImproperlyConfigured(
                f"{where} is {value!r}; not a usable number of seconds"
            ) from None
    else:
        raise ImproperlyConfigured(
            f"{where} is {value!r}; use seconds (a number), a timedelta, or None to keep "
            "ended runs forever"
        )
    if keep < dt.timedelta(0):
        raise ImproperlyConfigured(f"{where} is negative ({value!r}); use 0 or more")
    return keep


@cache
def app_settings() -> Settings:
    user = getattr(django_settings, "CONTINUUM", {}) or {}
    return Settings({**DEFAULTS, **user})


@receiver(setting_changed)
def _reset(setting: str, **kwargs: Any) -> None:
    if setting == "CONTINUUM":
        app_settings.cache_clear()
