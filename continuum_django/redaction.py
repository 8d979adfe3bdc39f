"""The redaction hook: ``CONTINUUM["REDACT"]`` hides secrets wherever payloads are displayed.

The hook is a callable taking a decoded payload and returning what may be shown. It
never changes what is stored, only what the admin (and other displays) print.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from django.utils.module_loading import import_string

from .conf import app_settings

SECRET_MARK = "••••••"


@cache
def _load(path: str) -> Callable[[Any], Any]:
    return import_string(path)  # type: ignore[no-any-return,unused-ignore]


def redactor() -> Callable[[Any], Any] | None:
    """The ``CONTINUUM["REDACT"]`` callable (given as a dotted path or a callable), or None."""
    value = app_settings().REDACT
    if value is None:
        return None
    return _load(value) if isinstance(value, str) else value  # type: ignore[no-any-return,unused-ignore]


def redact(value: Any) -> Any:
    """``value`` passed through the configured hook (unchanged when none is set)."""
    hook = redactor()
    return value if hook is None else hook(value)


def mask_keys(*keys: str) -> Callable[[Any], Any]:
    """A redaction hook that masks the values of the given dict keys, at any depth.

    In ``myproject/redact.py``: ``secrets = mask_keys("card_number", "password")``, and
    in settings: ``CONTINUUM = {"REDACT": "myproject.redact.secrets"}``.
    """
    wanted = {key.lower() for key in keys}

    def mask(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: SECRET_MARK if k.lower() in wanted else mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(item) for item in value]
        return value

    return mask
