"""The pure engine: replay, journal protocol and runtime. Imports neither Django nor Celery."""
