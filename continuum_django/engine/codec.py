"""The journal codec: JSON plus datetime, date, Decimal and UUID, and nothing else."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

from .exceptions import PayloadError

_TAGS = ("$datetime", "$date", "$decimal", "$uuid", "$object")


def _order(key: str) -> tuple[int, bytes]:
    """Where Postgres's ``jsonb`` puts an object's key: shorter keys (in UTF-8 bytes) first,
    then bytewise. Encoded objects take that order whatever the database."""
    raw = key.encode("utf-8", "surrogatepass")  # a lone surrogate: the database refuses it
    return len(raw), raw


def encode(value: Any, *, what: str = "value", max_bytes: int | None = None) -> Any:
    """Turn ``value`` into its JSON form, or raise `PayloadError` naming what was wrong.
    An object's keys come out in the journal's order (`_order`), as they read back."""
    encoded = _encode(value, what)
    if max_bytes is not None:
        size = len(json.dumps(encoded, separators=(",", ":")).encode())
        if size > max_bytes:
            raise PayloadError(
                f"{what} is {size} bytes once encoded, over the limit of {max_bytes} bytes "
                "(CONTINUUM['MAX_PAYLOAD_BYTES']); store large data elsewhere and pass a reference",
                size=size,
                limit=max_bytes,
            )
    return encoded


def _encode(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise PayloadError(f"{path} is {value!r}, which JSON cannot hold")
        return value
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, list | tuple):
        return [_encode(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise PayloadError(
                    f"{path} has a key {key!r} of type {type(key).__name__}; JSON keys must be str"
                )
        # In the journal's order, so that a value in hand and the same value read back
        # from the database iterate alike (replay must not depend on which one it got).
        out = {key: _encode(value[key], f"{path}[{key!r}]") for key in sorted(value, key=_order)}
        if len(out) == 1 and next(iter(out)) in _TAGS:
            return {"$object": out}
        return out
    raise PayloadError(
        f"{path} is a {type(value).__module__}.{type(value).__qualname__}, which cannot be "
        "journaled: use JSON types, datetime, date, Decimal or UUID (never pickle)",
        type_name=type(value).__qualname__,
    )


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
