"""System checks: a production-like setup with its journal on SQLite gets a warning."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.conf import settings
from django.core import checks
from django.test.utils import override_settings

SQLITE = "django.db.backends.sqlite3"
POSTGRES = "django.db.backends.postgresql"


@pytest.fixture
def journal_engine(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make the journal's database look like another engine (for the checks only)."""

    def use(engine: str) -> None:
        database = settings.DATABASES["default"]
        monkeypatch.setitem(database, "ENGINE", engine)
        if engine == SQLITE:  # as SQLite must be set up (continuum.E021, test_setup_checks)
            options = database.get("OPTIONS", {}) | {"transaction_mode": "IMMEDIATE"}
            monkeypatch.setitem(database, "OPTIONS", options)

    return use


def warnings(deploy: bool = False) -> list[str]:
    found = checks.run_checks(tags=["continuum"], include_deployment_checks=deploy)
    # Lint findings (W010/E010) and the homes (W022) of workflows other tests register are
    # not the subject here.
    return [m.id for m in found if m.id and not m.id.endswith(("010", "W022"))]


@pytest.mark.parametrize(
    ("engine", "debug", "hosts", "expected"),
    [
        (SQLITE, False, ["shop.example.com"], ["continuum.W001"]),
        (SQLITE, True, ["shop.example.com"], []),  # development
        (SQLITE, False, ["localhost", "127.0.0.1"], []),  # a demo on this machine
        (POSTGRES, False, ["shop.example.com"], []),
    ],
)
def test_sqlite_in_a_production_like_setup_is_warned(
    journal_engine: Callable[[str], None],
    engine: str,
    debug: bool,
    hosts: list[str],
    expected: list[str],
) -> None:
    journal_engine(engine)
    with override_settings(DEBUG=debug, ALLOWED_HOSTS=hosts):
        assert warnings() == expected


def test_check_deploy_always_warns_about_sqlite(journal_engine: Callable[[str], None]) -> None:
    journal_engine(SQLITE)
    with override_settings(DEBUG=True, ALLOWED_HOSTS=["localhost"]):
        assert warnings(deploy=True) == ["continuum.W001"]
    journal_engine(POSTGRES)
    assert warnings(deploy=True) == []
