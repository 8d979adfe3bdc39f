"""Celery app of the benchmark: `celery -A bench.celery_app worker` runs against bench.settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

if os.environ.get("BENCH_COUNT_SQL") == "1":
    from bench import sqlcount

    sqlcount.install_in_worker()
