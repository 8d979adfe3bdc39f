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
    try:
        _ = app_settings().schedule_grace
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), id="continuum.E040"))
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


def celery_app_problem() -> str | None:
    """What is wrong when continuum's tasks would be sent by Celery's fallback app, or None.

    A Django project's Celery app becomes the current one when the module that creates it
    is imported; when nothing imports it, Celery makes up a default app that knows neither
    the project's settings nor its broker and sends to ``amqp://localhost``.
    """
    from celery import current_app

    # Celery's fallback app is the only one called "default" and created without fix-ups.
    if current_app.main != "default" or getattr(current_app, "fixups", None):
        return None
    return (
        "No Celery app is loaded: continuum's tasks would be sent by Celery's default app, "
        "which ignores the CELERY_* settings and sends to a broker on localhost."
    )


CELERY_APP_FIX = (
    "Create the project's Celery app in <project>/celery.py and import it in the project "
    "package's __init__.py (`from .celery import app as celery_app`), as Celery's 'First "
    "steps with Django' guide shows, so that it is loaded whenever Django is"
)


@checks.register("continuum")
def check_celery_app(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """continuum.E020: the project's Celery app is never imported."""
    problem = celery_app_problem()
    if problem is None:
        return []
    return [checks.Error(problem, hint=CELERY_APP_FIX, id="continuum.E020")]


@checks.register("continuum", checks.Tags.database)
def check_sqlite_transaction_mode(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """continuum.E021: a journal on SQLite must take its write lock when a transaction begins."""
    if not _journal_on_sqlite():
        return []
    alias = app_settings().DATABASE
    mode = (settings.DATABASES[alias].get("OPTIONS") or {}).get("transaction_mode")
    if str(mode).upper() == "IMMEDIATE":
        return []
    return [
        checks.Error(
            f"The continuum journal is on SQLite (database {alias!r}) whose transactions "
            f"are not IMMEDIATE (transaction_mode is {mode!r}): concurrent writers fail with "
            "'database is locked' instead of waiting for each other.",
            hint=(
                f"add 'transaction_mode': 'IMMEDIATE' (and a 'timeout' in seconds, e.g. 20) "
                f"to DATABASES[{alias!r}]['OPTIONS'], or use PostgreSQL"
            ),
            id="continuum.E021",
        )
    ]


# The workflows registered when the app registry became ready: the ones every process of
# the project, workers included, has. Set by `ContinuumConfig.ready`.
_at_startup: frozenset[tuple[str, int]] | None = None


def note_startup_workflows() -> None:
    """Remember the workflows registered by Django's start-up (models and workflow modules)."""
    global _at_startup
    _at_startup = frozenset(registry.workflows)


@checks.register("continuum")
def check_workflow_modules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """continuum.W022: a workflow registered by an import that workers do not make."""
    if _at_startup is None:
        return []
    listed = app_settings().WORKFLOW_MODULES
    where = (
        f"one of CONTINUUM['WORKFLOW_MODULES'] ({', '.join(listed)})"
        if listed is not None
        else "an installed app's workflows module (<app>/workflows.py)"
    )
    scope = None if app_configs is None else tuple(config.name for config in app_configs)
    messages: list[checks.CheckMessage] = []
    for (name, version), definition in sorted(registry.workflows.items()):
        module = definition.fn.__module__
        if (name, version) in _at_startup or (scope and not module.startswith(scope)):
            continue
        messages.append(
            checks.Warning(
                f"workflow {name!r} version {version} is defined in {module!r}, which is not "
                "imported when Django starts: a worker that never imports it parks its runs "
                "as unknown_version.",
                hint=f"define it in {where}, or in a module one of them imports; that is "
                "what every process, workers included, imports when Django starts",
                obj=f"{module}.{definition.fn.__qualname__}",
                id="continuum.W022",
            )
        )
    return messages


@checks.register("continuum")
def check_transactional_activities(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """continuum.E030: a transactional activity that writes to another database than the
    journal's, where its writes could not commit together with its result. continuum.W030:
    one that declares no database while the journal is not on ``default``."""
    journal = app_settings().DATABASE
    messages: list[checks.CheckMessage] = []
    for name, definition in sorted(registry.activities.items()):
        if not definition.transactional or definition.using == journal:
            continue
        if definition.using is None:
            if journal != "default":
                messages.append(
                    checks.Warning(
                        f"activity {name!r} is transactional and declares no database, but "
                        f"the journal is on {journal!r}: only its writes to {journal!r} "
                        "commit with its result.",
                        hint=f"declare using={journal!r} and write there (.using() or a "
                        "database router)",
                        obj=f"{definition.fn.__module__}.{definition.fn.__qualname__}",
                        id="continuum.W030",
                    )
                )
            continue
        messages.append(
            checks.Error(
                f"activity {name!r} is transactional on database {definition.using!r}, but the "
                f"journal is on {journal!r}: its writes cannot commit in the transaction that "
                "journals its result, so every attempt of it fails.",
                hint="write to the journal's database (CONTINUUM['DATABASE']), or make it an "
                "ordinary activity that uses its idempotency key",
                obj=f"{definition.fn.__module__}.{definition.fn.__qualname__}",
                id="continuum.E030",
            )
        )
    return messages
