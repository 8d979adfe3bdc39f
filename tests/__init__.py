"""The continuum-django test suite.

Importing the package creates the suite's Celery app before Django sets up, as a
Django project's package does, so it is the app `shared_task`s and `current_app` use.
The example shop (whose orders app the suite installs) is imported first: its package
creates its own Celery app, and the suite's, created last, must be the current one.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import example_project  # noqa: F401 - see above: its Celery app first

from .celery_app import app as celery_app

__all__ = ["celery_app"]
