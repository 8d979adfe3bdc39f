"""The peers the benchmark measures continuum against: a Celery chain, DBOS, the raw database."""
