"""The distribution ships the reusable app only: the example shop runs from a checkout.

Building the wheel takes longer than this tier allows; this reads the packaging config the
build uses (verified by hand with `pip wheel . --no-deps -w /tmp/wheel-check`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_packages_only_continuum_django() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = find_packages(str(ROOT), **config["packages"]["find"])
    assert "continuum_django" in packages and "continuum_django.engine" in packages
    assert {name.split(".")[0] for name in packages} == {"continuum_django"}
    assert config["package-data"]["continuum_django"] == ["templates/**/*.html"]
