"""Settings of the test suite: Postgres and Redis, with short leases so crash tests run fast."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "continuum_django",
    "tests.testapp",
    "example_project.orders",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# pytest-django creates the test database (`test_<name>`) next to this one; the e2e
# workers are pointed at that test database by tests/conftest.py.
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/test")}
DATABASES["default"]["CONN_MAX_AGE"] = 60
# The suite runs with the options docs/guides/deployment.md recommends: parameters bound by
# the server and the step path's statements prepared (Django's defaults, client-side
# binding and no prepared statements, with CONTINUUM_TEST_CLIENT_BINDING=1; CI runs the
# journal contract tier that way too).
if not env.bool("CONTINUUM_TEST_CLIENT_BINDING", default=False):
    DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"

# Fast hashing for admin tests that create users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Redis db 9 is the suite's own: tests/conftest.py flushes it at the start of a session.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/9")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fix-up closes the database connection around every task unless told to
# reuse it; reconnecting costs more than the task (see docs/guides/deployment.md).
CELERY_DB_REUSE_MAX = 1000

# Short leases and a quick sweep keep crash-recovery tests fast; tests still move lease
# expiries and due times in the database rather than waiting for them.
CONTINUUM = {"LEASE_SECONDS": 5, "SWEEP_INTERVAL": 0.5, "REDISPATCH_AFTER": 1.0}
