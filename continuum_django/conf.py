"""App settings: the ``CONTINUUM`` dict merged over documented defaults, read lazily."""

from __future__ import annotations

import os
import socket
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
    "MAX_PAYLOAD_DEPTH": DEFAULT_MAX_DEPTH,
    "REDACT": None,
    "WORKFLOW_MODULES": None,
    "DETERMINISM_LINT": "warn",
    "DATABASE": "default",
    "BEAT": True,
    "PIPELINE": True,
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


@cache
def app_settings() -> Settings:
    user = getattr(django_settings, "CONTINUUM", {}) or {}
    return Settings({**DEFAULTS, **user})


@receiver(setting_changed)
def _reset(setting: str, **kwargs: Any) -> None:
    if setting == "CONTINUUM":
        app_settings.cache_clear()
