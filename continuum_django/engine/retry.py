"""Retry policies for activities: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

from .exceptions import NonRetryableError


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how fast a failed activity attempt is retried.

    ``max_attempts`` counts every attempt, the first included. The delay before
    attempt ``n + 1`` is ``initial_interval * backoff_coefficient ** (n - 1)``,
    capped at ``max_interval`` and spread by ``± jitter`` (a fraction).
    ``non_retryable_errors`` names exception classes (by ``__name__`` or
    ``module.qualname``) that fail the activity at once.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1
    non_retryable_errors: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ValueError("retry intervals must not be negative")
        if self.backoff_coefficient < 1:
            raise ValueError(f"backoff_coefficient must be >= 1, not {self.backoff_coefficient}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter}")
        names = tuple(
            error if isinstance(error, str) else f"{error.__module__}.{error.__qualname__}"
            for error in self.non_retryable_errors
        )
        object.__setattr__(self, "non_retryable_errors", names)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(
            self.initial_interval * self.backoff_coefficient ** (attempt - 1), self.max_interval
        )
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))

    def retries_after(self, attempt: int, error_type: str, non_retryable: bool) -> bool:
        """Whether an attempt that failed with ``error_type`` is followed by another."""
        if non_retryable or attempt >= self.max_attempts:
            return False
        short = error_type.rsplit(".", 1)[-1]
        return not any(name in (error_type, short) for name in self.non_retryable_errors)

    def to_json(self) -> dict[str, Any]:
        # Not `asdict`: it deep-copies every value, and these are numbers and strings.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["non_retryable_errors"] = list(self.non_retryable_errors)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetryPolicy:
        data = dict(data)
        data["non_retryable_errors"] = tuple(data.get("non_retryable_errors", ()))
        return cls(**data)


# Characters of an error's message and traceback that are journaled; the rest is cut,
# with a marker saying how much (a traceback keeps its end, where the error was raised).
MAX_ERROR_MESSAGE_CHARS = 2000
MAX_TRACEBACK_CHARS = 8000


def storable_text(text: str) -> str:
    """``text`` with what the journal cannot store made visible instead: a NUL character
    becomes ``\\x00`` and a surrogate code point its ``\\udXXX`` escape."""
    text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cut(text: str, limit: int, *, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    marker = f" [truncated {len(text) - limit} chars] "
    return "…" + marker + text[-limit:] if keep_end else text[:limit] + " …" + marker.rstrip()


def error_payload(error: BaseException) -> dict[str, Any]:
    """The journal form of an exception raised by user code: always storable, whatever the
    exception holds (its message and traceback are bounded and made valid text)."""
    import traceback

    kind = type(error)
    try:
        message = str(error)
    except Exception:  # a broken __str__ (or a huge int) must not lose the error
        message = f"<the message of this {kind.__qualname__} could not be read>"
    trace = "".join(traceback.format_exception(error))
    return {
        "type": storable_text(f"{kind.__module__}.{kind.__qualname__}"),
        "message": _cut(storable_text(message), MAX_ERROR_MESSAGE_CHARS),
        "non_retryable": isinstance(error, NonRetryableError),
        "traceback": _cut(storable_text(trace), MAX_TRACEBACK_CHARS, keep_end=True),
    }
