"""Management commands of continuum-django."""
