"""The codec refuses what a later reader could not take, naming where; errors stay storable."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import pytest

from continuum_django import ActivityContext, activity, workflow
from continuum_django.engine import codec
from continuum_django.engine.context import EngineConfig
from continuum_django.engine.exceptions import NonRetryableError, PayloadError
from continuum_django.engine.local import LocalRunner
from continuum_django.engine.retry import (
    MAX_ERROR_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    error_payload,
)


def nested(levels: int) -> Any:
    """``levels`` lists, one inside the other, built without recursion."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_depth_at_the_limit_is_accepted_and_one_more_is_refused() -> None:
    limit = codec.DEFAULT_MAX_DEPTH
    assert codec.decode(codec.encode(nested(limit))) == nested(limit)
    with pytest.raises(PayloadError, match=rf"nested deeper than {limit} levels"):
        codec.encode(nested(limit + 1))


def test_depth_limit_is_configurable() -> None:
    codec.encode(nested(3), max_depth=3)
    with pytest.raises(PayloadError, match=r"^value\[0\]\[0\]\[0\] is nested deeper than 3"):
        codec.encode(nested(4), max_depth=3)


def test_a_hundred_thousand_deep_list_is_refused_without_recursion_error() -> None:
    deep = nested(100_000)
    assert sys.getrecursionlimit() < 100_000
    with pytest.raises(PayloadError, match="MAX_PAYLOAD_DEPTH"):
        codec.encode(deep, max_bytes=1024)


def test_depth_counts_dicts_too() -> None:
    value: Any = "leaf"
    for _ in range(codec.DEFAULT_MAX_DEPTH + 1):
        value = {"k": value}
    with pytest.raises(PayloadError, match=r"^value\['k'\]\['k'\].* nested deeper"):
        codec.encode(value)


@pytest.mark.parametrize("depth", [0, -1, codec.MAX_DEPTH_LIMIT + 1])
def test_a_depth_limit_out_of_range_is_a_value_error(depth: int) -> None:
    with pytest.raises(ValueError, match="max_depth must be between 1 and"):
        codec.encode([], max_depth=depth)


HOSTILE = {
    "nul in a string": ({"items": [1, 2, 3, {"name": "a\x00b"}]}, "NUL character"),
    "nul in a key": ({"items": [1, 2, 3, {"na\x00me": 1}]}, "key 'na\\x00me' that contains a NUL"),
    "lone surrogate in a string": ({"items": [1, 2, 3, {"name": "\ud800"}]}, "U+D800"),
    "lone surrogate in a key": ({"items": [1, 2, 3, {"\udfff": 1}]}, "U+DFFF"),
    "surrogate pair (not a character in Python)": (
        {"items": [1, 2, 3, {"name": "\ud83d\ude00"}]},
        "U+D83D",
    ),
    "huge int": ({"items": [1, 2, 3, {"name": 10**5000}]}, "int of more than 1000 digits"),
    "huge negative int": ({"items": [1, 2, 3, {"name": -(10**1000)}]}, "more than 1000 digits"),
}


@pytest.mark.parametrize(("value", "problem"), HOSTILE.values(), ids=HOSTILE.keys())
def test_each_refusal_names_the_path(value: Any, problem: str) -> None:
    with pytest.raises(PayloadError) as info:
        codec.encode(value, what="input.kwargs")
    message = str(info.value)
    assert message.startswith("input.kwargs['items'][3]"), message
    assert problem in message
    assert info.value.path.startswith("input.kwargs['items'][3]")  # type: ignore[attr-defined]


def test_the_path_follows_what_when_they_differ() -> None:
    with pytest.raises(
        PayloadError, match=r"^input of workflow 'w': input\.args\[1\] contains a NUL"
    ):
        codec.encode_many(
            {"input.args": ["ok", "a\x00"], "input.kwargs": {}}, what="input of workflow 'w'"
        )


def test_ints_up_to_the_bound_pass() -> None:
    biggest = 10**codec.MAX_INT_DIGITS - 1
    assert codec.decode(codec.encode([biggest, -biggest])) == [biggest, -biggest]
    assert codec.encode(True) is True


def test_valid_unicode_passes() -> None:
    text = "naïve 😀 \u2028 \t"
    assert codec.decode(codec.encode({text: text})) == {text: text}


def test_args_and_kwargs_share_one_size_limit() -> None:
    half = "x" * 60
    codec.encode_many({"a": half}, what="input", max_bytes=100)
    with pytest.raises(
        PayloadError, match=r"input is \d+ bytes once encoded, over the limit of 100"
    ):
        codec.encode_many({"a": half, "b": half}, what="input", max_bytes=100)


@pytest.mark.parametrize(
    "value",
    [nested(codec.DEFAULT_MAX_DEPTH), {"$object": {"$date": 1}}, ["é", 10**999, {"": None}]],
)
def test_decode_takes_back_what_encode_produced(value: Any) -> None:
    encoded = codec.encode(value)
    assert codec.decode(json.loads(json.dumps(encoded))) == value


def test_error_payload_bounds_and_cleans_what_it_stores() -> None:
    error = ValueError("bad \x00 byte \ud800 half " + "m" * 12_345)
    payload = error_payload(error)
    message = payload["message"]
    assert len(message) < MAX_ERROR_MESSAGE_CHARS + 50
    assert message.startswith("bad \\x00 byte \\ud800 half mmm")
    assert re.search(r"… \[truncated \d+ chars\]$", message)
    trace = payload["traceback"]
    assert len(trace) < MAX_TRACEBACK_CHARS + 50
    assert trace.startswith("… [truncated ")
    assert "\x00" not in trace
    # What the journal keeps passes the codec's gate.
    codec.encode(payload, max_bytes=64 * 1024)


def test_error_payload_of_a_short_message_is_unchanged() -> None:
    payload = error_payload(NonRetryableError("card declined"))
    assert payload["message"] == "card declined"
    assert payload["non_retryable"] is True
    assert "truncated" not in payload["traceback"]


def test_error_payload_survives_an_unprintable_exception() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    payload = error_payload(Broken())
    assert "could not be read" in payload["message"]
    codec.encode(payload)
    huge = error_payload(ValueError(10**5000))  # str() of it raises: past the digit limit
    codec.encode(huge)


HOSTILE_DETAILS = [nested(6), {"a": "\x00"}, "x" * 400]
REFUSALS = ["nested deeper than 5 levels", "['a'] contains a NUL", "over the limit of 300 bytes"]


def refusal(error: PayloadError) -> str:
    """Which of `REFUSALS` the error is (the result must stay under the small size limit)."""
    return next((words for words in REFUSALS if words in str(error)), str(error)[:80])


@activity(name="codec_limits.heartbeating")
def heartbeating(activity_context: ActivityContext) -> list[str]:
    refused = []
    for details in HOSTILE_DETAILS:
        try:
            activity_context.heartbeat(details)
        except PayloadError as exc:
            refused.append(refusal(exc))
    activity_context.heartbeat("fine")
    return refused


@workflow(name="codec_limits.attributes")
def hostile_attributes(ctx: Any) -> dict[str, list[str]]:
    refused = []
    for value in HOSTILE_DETAILS:
        try:
            ctx.set_attributes(note=value)
        except PayloadError as exc:
            refused.append(refusal(exc))
    ctx.set_attributes(note="fine")
    return {"attributes": refused, "heartbeats": ctx.activity(heartbeating)}


def test_heartbeats_and_set_attributes_pass_the_engines_limits() -> None:
    runner = LocalRunner(config=EngineConfig(max_payload_bytes=300, max_payload_depth=5))
    run_id = runner.start(hostile_attributes)
    runner.run_until_idle()
    stored = runner.journal.runs[run_id]
    assert stored.status == "completed", stored.error
    assert stored.result == {"attributes": REFUSALS, "heartbeats": REFUSALS}
    assert stored.attributes == {"note": "fine"}
    (task,) = runner.journal.tasks.values()
    assert task.heartbeat_details == "fine"
