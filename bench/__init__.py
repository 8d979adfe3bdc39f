"""The benchmark suite of continuum-django: `python -m bench` (see bench/README.md)."""
