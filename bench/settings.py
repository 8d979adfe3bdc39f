"""Settings of the benchmark: its own Postgres database and Redis db, workers keep connections."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

SECRET_KEY = "bench-only-not-a-secret"
DEBUG = False  # DEBUG would keep every query in memory: the worker's RSS would grow with it
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "continuum_django",
    "bench",
]

# Dropped and recreated by every `python -m bench`; never point it at a database you keep.
DATABASES = {
    "default": env.db(
        "BENCH_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/continuum_bench"
    )
}
# Connections are kept (in workers, see CELERY_DB_REUSE_MAX below); no health check, so
# that no extra `SELECT 1` runs before the first query of every task.
DATABASES["default"]["CONN_MAX_AGE"] = 600
DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
# The options docs/guides/deployment.md recommends: parameters bound by the server, and
# statements prepared after psycopg's default 5 executions (the step path's SQL texts are
# fixed, so each is planned once per connection). BENCH_CLIENT_BINDING=1 measures Django's
# defaults instead (client-side binding, nothing prepared).
if not env.bool("BENCH_CLIENT_BINDING", default=False):
    DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Celery's Django fix-up closes every connection before and after each task, whatever
# CONN_MAX_AGE says, unless CELERY_DB_REUSE_MAX is set: this keeps a worker's connection
# for that many tasks (BENCH_CELERY_DB_REUSE_MAX=0 measures Celery's default, reconnecting).
CELERY_DB_REUSE_MAX = env.int("BENCH_CELERY_DB_REUSE_MAX", default=1_000_000) or None

# Redis db 14 is the benchmark's own: flushed at the start of every run. It holds the
# Celery-chain peer's and the readiness ping's results (continuum's tasks ignore theirs) and
# the counts of the database-cost phase; it is the broker too unless BENCH_BROKER_URL
# names another (RabbitMQ: amqp://guest:guest@127.0.0.1:5672//; its queues are purged).
BENCH_REDIS_URL = env.str("BENCH_REDIS_URL", default="redis://127.0.0.1:6379/14")
CELERY_BROKER_URL = env.str("BENCH_BROKER_URL", default=BENCH_REDIS_URL)
CELERY_RESULT_BACKEND = BENCH_REDIS_URL
# kombu's Redis transport emulates acknowledgements (an "unacked" hash and index per
# message, so that a worker's crash redelivers it). Kept by default, as in most
# deployments; BENCH_ACK_EMULATION=0 turns it off for continuum and the chain alike.
if not env.bool("BENCH_ACK_EMULATION", default=True):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"ack_emulation": False}
CELERY_TASK_IGNORE_RESULT = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Defaults, except no beat entry: a bench worker runs no beat, nothing here needs the sweep.
CONTINUUM: dict[str, object] = {"BEAT": False}
