"""The redaction hook: ``CONTINUUM["REDACT"]`` hides secrets wherever stored values are shown.

The hook is a callable taking a value and returning what may be shown. It receives every
value the admin shows or logs, each in its own shape: a decoded payload (input, result,
attributes, published state, arguments, heartbeat details, signal payloads, event
payloads), an error as a dict (``{"type": ..., "message": ..., "traceback": ...}``), and
free text (a park detail, a cancel reason, an operator's reason in the admin log) as a
plain ``str``. It never changes what is stored, only what is printed.
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


def redact_error(error: Any) -> Any:
    """An error dict through the hook; whatever comes back that is not a dict is dropped."""
    if not error:
        return error
    shown = redact(error)
    return shown if isinstance(shown, dict) else {"type": "error", "message": str(shown)}


def redact_text(text: str) -> str:
    """Free text (park detail, cancel reason) through the hook, always as a string."""
    if not text:
        return text
    return str(redact(text))


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
