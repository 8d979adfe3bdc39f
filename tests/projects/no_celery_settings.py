"""A project that never imports its Celery app (continuum.E020), for tests/django/test_setup_checks.

It lives outside the ``tests`` package, whose import creates the suite's Celery app: the
tests put this directory on the subprocess's path and import it as a top-level module.
"""

import environ

env = environ.Env()

SECRET_KEY = "tests-only-not-a-secret"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "continuum_django"]
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/test")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CELERY_BROKER_URL = "redis://127.0.0.1:6379/4"  # read only by a project app: never here
