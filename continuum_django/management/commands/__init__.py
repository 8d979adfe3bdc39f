"""The ``continuum_*`` management commands."""
