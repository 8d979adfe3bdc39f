"""How the admin shows stored values: decoded, redacted, pretty, truncated and escaped."""

from __future__ import annotations

import json
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from ..engine import codec
from ..redaction import redact, redact_error, redact_text

PAYLOAD_LIMIT = 2000
EMPTY = mark_safe('<span class="cn-muted">—</span>')


def readable(value: Any) -> str:
    """A stored (codec-encoded) value decoded, redacted and pretty-printed as JSON text."""
    try:
        decoded = codec.decode(value)
    except (TypeError, ValueError):
        decoded = value
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
    """An error payload, redacted: its type and message, and the traceback folded away."""
    error = redact_error(error)
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


def text_html(text: str, limit: int = PAYLOAD_LIMIT) -> SafeString:
    """Free text (a park detail), redacted, truncated and escaped in a ``<pre>`` block."""
    if not text:
        return EMPTY
    return format_html('<pre class="cn-payload">{}</pre>', truncate(redact_text(text), limit))
