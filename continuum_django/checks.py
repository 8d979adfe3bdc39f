"""System checks: a misconfigured ``CONTINUUM`` setting, and non-deterministic workflow code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .conf import DEFAULTS, app_settings, parse_retention
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
    try:
        parse_retention(user.get("RETENTION", DEFAULTS["RETENTION"]))
    except ImproperlyConfigured as exc:
        errors.append(
            checks.Error(
                str(exc),
                hint="for example {'default': timedelta(days=30), 'orders.fulfil': None}",
                id="continuum.E023",
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


LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1", "testserver", ".localhost"}


def _journal_on_sqlite() -> bool:
    from .conf import app_settings

    database = settings.DATABASES.get(app_settings().DATABASE, {})
    return "sqlite" in str(database.get("ENGINE", ""))


def _sqlite_warning(why: str) -> checks.Warning:
    return checks.Warning(
        f"The continuum journal is on SQLite {why}.",
        hint=(
            "SQLite has no row locks and serialises every writer on one file lock: fine "
            "for development and demos, not for production. Point CONTINUUM['DATABASE'] "
            "at PostgreSQL (for example DATABASE_URL=postgres://...)."
        ),
        id="continuum.W001",
    )


@checks.register("continuum", checks.Tags.database)
def check_journal_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when a production-like setup (DEBUG off, serving a real host) runs on SQLite."""
    public = [h for h in settings.ALLOWED_HOSTS if h not in LOCAL_HOSTS]
    if _journal_on_sqlite() and not settings.DEBUG and public:
        return [_sqlite_warning(f"while DEBUG is off and ALLOWED_HOSTS serves {public[0]!r}")]
    return []


@checks.register("continuum", deploy=True)
def check_journal_database_deploy(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """``manage.py check --deploy`` always warns about a journal on SQLite."""
    return [_sqlite_warning("(manage.py check --deploy)")] if _journal_on_sqlite() else []
