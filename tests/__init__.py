"""The continuum-django test suite.

Importing the package creates the suite's Celery app before Django sets up, as a
Django project's package does, so it is the app `shared_task`s and `current_app` use.
"""

from .celery_app import app as celery_app

__all__ = ["celery_app"]
