"""The journal codec: JSON plus datetime, date, Decimal and UUID, and nothing else.

`encode` is the one gate every stored or sent value passes. Besides the types, it refuses
what would break a later reader: nesting deeper than ``max_depth`` (recursive code such as
pickle, json and Postgres would hit their stack limits), more than ``max_bytes``, a NUL
character or a surrogate code point in a string or key (Postgres and UTF-8 cannot hold them),
and ints past `MAX_INT_DIGITS` (Python refuses to read them back).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from decimal import Decimal
from typing import Any

from .exceptions import PayloadError

_TAGS = ("$datetime", "$date", "$decimal", "$uuid", "$object")

# The default of CONTINUUM["MAX_PAYLOAD_DEPTH"], and the most it may be: every level the
# codec accepts may cost two levels once stored (a tag-like key is wrapped in "$object"),
# and json, pickle and Postgres each recurse per level, so this stays far from their limits.
DEFAULT_MAX_DEPTH = 64
MAX_DEPTH_LIMIT = 100

# Decimal digits an int may have: well under Python's 4,300-digit int/str conversion limit,
# which every process that reads the value back must pass (and which can be set lower).
MAX_INT_DIGITS = 1000
_INT_BOUND = 10**MAX_INT_DIGITS

_SURROGATE = re.compile("[\ud800-\udfff]")
_TOO_DEEP = "is nested too deep"  # worded with the limit once the refusal reaches `encode_many`


class _Refused(Exception):
    """A refusal on its way out of the walk; each container it leaves adds its key."""

    def __init__(self, problem: str, **details: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.details = details
        self.keys: list[int | str] = []


def _order(key: str) -> tuple[int, bytes]:
    """Where Postgres's ``jsonb`` puts an object's key: shorter keys (in UTF-8 bytes) first,
    then bytewise. Encoded objects take that order whatever the database."""
    raw = key.encode("utf-8")  # keys are checked first: no surrogates here
    return len(raw), raw


def _show(text: str, limit: int = 40) -> str:
    """A string for a message: repr, cut short."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def string_problem(text: str) -> str | None:
    """What makes ``text`` unstorable (a NUL character or a surrogate code point), or None."""
    if "\x00" in text:
        return "contains a NUL character (\\x00), which Postgres cannot store"
    if not text.isascii():
        found = _SURROGATE.search(text)
        if found:
            return (
                f"contains the surrogate code point U+{ord(found.group()):04X} (a lone half of "
                "a UTF-16 pair), which is not valid Unicode text"
            )
    return None


def encode(
    value: Any,
    *,
    what: str = "value",
    max_bytes: int | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Turn ``value`` into its JSON form, or raise `PayloadError` naming what was wrong and
    where (``what`` followed by the keys and indexes leading to it, e.g. ``value['a'][0]``).
    An object's keys come out in the journal's order (`_order`), as they read back."""
    return encode_many({what: value}, what=what, max_bytes=max_bytes, max_depth=max_depth)[what]


def encode_many(
    values: dict[str, Any],
    *,
    what: str,
    max_bytes: int | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> dict[str, Any]:
    """`encode` each value (keyed by its path), the limit of ``max_bytes`` applying to them
    together: a run's args and kwargs are one input."""
    if not 0 < max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_LIMIT}, not {max_depth}")
    encoded = {}
    for root, value in values.items():
        try:
            encoded[root] = _encode(value, max_depth)
        except _Refused as refused:
            where = root + "".join(
                f"[{key}]" if isinstance(key, int) else f"[{_show(key)}]"
                for key in reversed(refused.keys)
            )
            problem = refused.problem
            if problem is _TOO_DEEP:
                problem = (
                    f"is nested deeper than {max_depth} levels (CONTINUUM['MAX_PAYLOAD_DEPTH']); "
                    "flatten the value, or store it elsewhere and pass a reference"
                )
            message = f"{where} {problem}"
            raise PayloadError(
                message if root == what else f"{what}: {message}", path=where, **refused.details
            ) from None
    if max_bytes is not None:
        size = sum(len(json.dumps(v, separators=(",", ":")).encode()) for v in encoded.values())
        if size > max_bytes:
            raise PayloadError(
                f"{what} is {size} bytes once encoded, over the limit of {max_bytes} bytes "
                "(CONTINUUM['MAX_PAYLOAD_BYTES']); store large data elsewhere and pass a reference",
                size=size,
                limit=max_bytes,
            )
    return encoded


def _encode(value: Any, depth_left: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        problem = string_problem(value)
        if problem:
            raise _Refused(problem)
        return value
    if isinstance(value, int):
        if -_INT_BOUND < value < _INT_BOUND:
            return value
        raise _Refused(
            f"is an int of more than {MAX_INT_DIGITS} digits, which not every reader can "
            "take back: pass it as a str or a Decimal"
        )
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _Refused(f"is {value!r}, which JSON cannot hold")
        return value
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, list | tuple | dict) and depth_left == 0:
        # Refused before going down: the walk itself never nests deeper than the limit.
        raise _Refused(_TOO_DEEP)
    if isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_encode(item, depth_left - 1))
            except _Refused as refused:
                refused.keys.append(index)
                raise
        return items
    if isinstance(value, dict):
        return _encode_dict(value, depth_left)
    raise _Refused(
        f"is a {type(value).__module__}.{type(value).__qualname__}, which cannot be "
        "journaled: use JSON types, datetime, date, Decimal or UUID (never pickle)",
        type_name=type(value).__qualname__,
    )


def _encode_dict(value: dict[Any, Any], depth_left: int) -> dict[str, Any]:
    for key in value:
        if not isinstance(key, str):
            raise _Refused(
                f"has a key {key!r:.40} of type {type(key).__name__}; JSON keys must be str"
            )
        problem = string_problem(key)
        if problem:
            raise _Refused(f"has a key {_show(key)} that {problem}")
    # In the journal's order, so that a value in hand and the same value read back
    # from the database iterate alike (replay must not depend on which one it got).
    out = {}
    for key in sorted(value, key=_order):
        try:
            out[key] = _encode(value[key], depth_left - 1)
        except _Refused as refused:
            refused.keys.append(key)
            raise
    if len(out) == 1 and next(iter(out)) in _TAGS:
        return {"$object": out}
    return out


_PLAIN = (str, int, float, bool, type(None))


def decode(value: Any) -> Any:
    """Inverse of `encode`."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, list):
        return [decode(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            tag, inner = next(iter(value.items()))
            if tag == "$datetime":
                return dt.datetime.fromisoformat(inner)
            if tag == "$date":
                return dt.date.fromisoformat(inner)
            if tag == "$decimal":
                return Decimal(inner)
            if tag == "$uuid":
                return uuid.UUID(inner)
            if tag == "$object":
                return {key: decode(item) for key, item in inner.items()}
        return {key: decode(item) for key, item in value.items()}
    return value
