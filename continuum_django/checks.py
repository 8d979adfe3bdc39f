"""System checks for a misconfigured ``CONTINUUM`` setting."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from .conf import DEFAULTS


@checks.register("continuum")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    user = getattr(settings, "CONTINUUM", {}) or {}
    if not isinstance(user, dict):
        return [checks.Error("CONTINUUM must be a dict", id="continuum.E001")]
    for key in sorted(set(user) - set(DEFAULTS)):
        errors.append(
            checks.Error(
                f"CONTINUUM has an unknown key {key!r}",
                hint=f"known keys: {', '.join(sorted(DEFAULTS))}",
                id="continuum.E002",
            )
        )
    lint = user.get("DETERMINISM_LINT", DEFAULTS["DETERMINISM_LINT"])
    if lint not in ("warn", "error"):
        errors.append(
            checks.Error(
                f"CONTINUUM['DETERMINISM_LINT'] is {lint!r}; use 'warn' or 'error'",
                id="continuum.E003",
            )
        )
    return errors
