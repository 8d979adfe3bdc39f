"""The codec round-trips what the journal may hold and refuses the rest; retry delays."""

from __future__ import annotations

import datetime as dt
import pickle
import random
import uuid
from decimal import Decimal

import pytest

from continuum_django.engine import codec
from continuum_django.engine.exceptions import (
    ActivityFailed,
    CancellationRequested,
    ContinuumError,
    PayloadError,
    ResultTimeout,
)
from continuum_django.engine.retry import RetryPolicy


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        3,
        2.5,
        "text",
        [1, "a", None],
        {"nested": {"list": [1, 2]}},
        dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        dt.date(2026, 1, 2),
        Decimal("10.25"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        {"$datetime": "a user key that looks like a tag"},
    ],
)
def test_round_trip(value: object) -> None:
    assert codec.decode(codec.encode(value)) == value


def test_tuples_become_lists() -> None:
    assert codec.decode(codec.encode((1, 2))) == [1, 2]


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (object(), "builtins.object"),
        ({1: "a"}, "key 1 of type int"),
        ({"a": [set()]}, "value['a'][0]"),
        (float("nan"), "nan"),
    ],
)
def test_refuses_what_json_cannot_hold_and_names_it(value: object, named: str) -> None:
    with pytest.raises(PayloadError, match=r"cannot|JSON") as info:
        codec.encode(value)
    assert named in str(info.value)


def test_size_limit_names_the_value_and_the_limit() -> None:
    with pytest.raises(PayloadError, match=r"input of x is \d+ bytes .* limit of 10 bytes"):
        codec.encode("x" * 100, what="input of x", max_bytes=10)


def test_retry_delay_backs_off_caps_and_jitters() -> None:
    policy = RetryPolicy(initial_interval=1, backoff_coefficient=2, max_interval=5, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    jittery = RetryPolicy(initial_interval=10, jitter=0.5)
    delays = {jittery.delay(1, random.Random(seed)) for seed in range(20)}
    assert len(delays) > 1 and all(5 <= d <= 15 for d in delays)


def test_retry_decision_honours_attempts_and_non_retryable_types() -> None:
    policy = RetryPolicy(max_attempts=3, non_retryable_errors=(KeyError, "mod.Custom"))
    assert policy.retries_after(1, "builtins.RuntimeError", False)
    assert not policy.retries_after(3, "builtins.RuntimeError", False)
    assert not policy.retries_after(1, "builtins.KeyError", False)
    assert not policy.retries_after(1, "mod.Custom", False)
    assert not policy.retries_after(1, "builtins.RuntimeError", True)
    assert RetryPolicy.from_json(policy.to_json()) == policy


def test_bad_retry_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)


def test_errors_survive_pickling_with_their_details() -> None:
    error = ActivityFailed("it failed", activity="charge", attempts=3)
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ActivityFailed) and isinstance(copy, ContinuumError)
    assert (str(copy), copy.activity, copy.attempts) == ("it failed", "charge", 3)
    cancel = pickle.loads(pickle.dumps(CancellationRequested("bye")))
    assert cancel.reason == "bye"
    assert issubclass(ResultTimeout, TimeoutError)
    assert not issubclass(CancellationRequested, Exception)
