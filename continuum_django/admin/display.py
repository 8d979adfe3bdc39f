"""How the admin shows stored values: decoded, redacted, pretty, truncated and escaped."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

from django.utils.html import format_html
from django.utils.module_loading import import_string
from django.utils.safestring import SafeString, mark_safe

from ..conf import app_settings
from ..engine import codec

PAYLOAD_LIMIT = 2000
SECRET_MARK = "••••••"
EMPTY = mark_safe('<span class="cn-muted">—</span>')


@cache
def _load_redactor(path: str) -> Callable[[Any], Any]:
    return import_string(path)  # type: ignore[no-any-return,unused-ignore]


def redactor() -> Callable[[Any], Any] | None:
    """The ``CONTINUUM["REDACT"]`` callable (a dotted path, or a callable), or None."""
    value = app_settings().REDACT
    if value is None:
        return None
    return _load_redactor(value) if isinstance(value, str) else value  # type: ignore[no-any-return,unused-ignore]


def mask_keys(*keys: str) -> Callable[[Any], Any]:
    """A redactor that replaces the values of the given dict keys (at any depth).

    ``CONTINUUM = {"REDACT": "myproject.redact"}`` with
    ``redact = mask_keys("card_number", "password")`` in ``myproject``.
    """
    wanted = {key.lower() for key in keys}

    def redact(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: SECRET_MARK if k.lower() in wanted else redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [redact(item) for item in value]
        return value

    return redact


def readable(value: Any) -> str:
    """A stored (codec-encoded) value decoded, redacted and pretty-printed as JSON text."""
    try:
        decoded = codec.decode(value)
    except (TypeError, ValueError):
        decoded = value
    redact = redactor()
    if redact is not None:
        decoded = redact(decoded)
    return json.dumps(decoded, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def truncate(text: str, limit: int = PAYLOAD_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit} more characters)"


def payload_html(value: Any, limit: int = PAYLOAD_LIMIT) -> SafeString:
    """The value as an escaped ``<pre>`` block (or a dash when empty)."""
    if value is None or value == {} or value == []:
        return EMPTY
    return format_html('<pre class="cn-payload">{}</pre>', truncate(readable(value), limit))


def error_html(error: dict[str, Any] | None) -> SafeString:
    """An error payload: its type and message, and the traceback folded away."""
    if not error:
        return EMPTY
    message = truncate(str(error.get("message", "")), 1000)
    head = format_html("<strong>{}</strong>: {}", error.get("type", "error"), message)
    traceback = str(error.get("traceback") or "")
    if not traceback:
        return head
    return format_html(
        '{}<details><summary>traceback</summary><pre class="cn-payload">{}</pre></details>',
        head,
        truncate(traceback, 8000),
    )
