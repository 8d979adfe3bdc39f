"""Celery app of the test suite: `celery -A tests.celery_app worker` runs against tests.settings.

Celery's Django fix-up (installed because DJANGO_SETTINGS_MODULE is set before the app
is created) calls `django.setup()` before the worker imports any task module, so the
app registry is ready when `continuum_django`'s tasks are autodiscovered.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
