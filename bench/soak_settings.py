"""Settings of the soak: its own database and Redis db, short leases, the sweep on beat.

SOAK_DATABASE_URL names the database (dropped and recreated by every soak: never point it
at one you keep); SOAK_BROKER_URL the Redis db that is the broker (flushed, on purpose).
"""

from bench.settings import *  # noqa: F403
from bench.settings import env

DATABASES = {
    "default": env.db(
        "SOAK_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/continuum_soak"
    )
}
# Postgres is restarted under the workers: a broken connection must be noticed and replaced.
DATABASES["default"]["CONN_MAX_AGE"] = 60
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Celery's default: its Django fix-up closes unusable connections around every task
# (with CELERY_DB_REUSE_MAX it would keep a connection the restart broke).
CELERY_DB_REUSE_MAX = None

BENCH_REDIS_URL = env.str("SOAK_BROKER_URL", default="redis://127.0.0.1:6379/13")
CELERY_BROKER_URL = BENCH_REDIS_URL
CELERY_RESULT_BACKEND = BENCH_REDIS_URL

CONTINUUM = {
    "BEAT": True,
    "SWEEP_INTERVAL": 1.0,
    # A killed worker's runs and activities wait one lease before another worker takes them.
    "LEASE_SECONDS": 5.0,
    # The sweep re-sends the hint for work due longer than this. Under the chaos the queue
    # is often longer than that: every re-send then queues one more copy (see
    # docs/reliability.md), so the soak waits 30 s before presuming a message lost.
    "REDISPATCH_AFTER": 30.0,
    "WORKFLOW_MODULES": ["bench.soak_workflows"],
}
