"""The test settings on SQLite, for the journal contract suite:
`pytest tests/contract --ds=tests.settings_sqlite`.

Writers take the database lock when a transaction begins (IMMEDIATE) and wait for it
(timeout), as the example project configures SQLite.
"""

from .settings import *  # noqa: F403

(BASE_DIR / "test-artifacts").mkdir(exist_ok=True)  # noqa: F405
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE_DIR / "test-artifacts" / "contract.sqlite3"),  # noqa: F405
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        "TEST": {"NAME": str(BASE_DIR / "test-artifacts" / "test-contract.sqlite3")},  # noqa: F405
    }
}
