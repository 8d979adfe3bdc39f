"""System checks: a misconfigured ``CONTINUUM`` setting, and non-deterministic workflow code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core import checks

from .conf import DEFAULTS, app_settings
from .engine.definitions import registry


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


@checks.register("continuum")
def check_determinism(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The determinism lint's findings, recorded at registration, at the configured level."""
    as_errors = app_settings().DETERMINISM_LINT == "error"
    level: Callable[..., checks.CheckMessage] = checks.Error if as_errors else checks.Warning
    check_id = "continuum.E010" if as_errors else "continuum.W010"
    modules = None if app_configs is None else tuple(config.name for config in app_configs)
    messages: list[checks.CheckMessage] = []
    for (name, version), definition in sorted(registry.workflows.items()):
        fn = definition.fn
        if modules is not None and not fn.__module__.startswith(modules):
            continue
        for finding in definition.lint_findings:
            messages.append(
                level(
                    f"workflow {name!r} version {version}, line {finding.line}: "
                    f"{finding.call} breaks replay",
                    hint=f"{finding.hint}; or, if it is safe here, waive it with "
                    f"@workflow(..., waive=({finding.rule!r},))",
                    obj=f"{fn.__module__}.{fn.__qualname__}",
                    id=check_id,
                )
            )
    return messages
