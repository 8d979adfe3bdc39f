"""Flow-control options: checked when declared, the key evaluated from a call's arguments."""

from __future__ import annotations

import pickle

import pytest

from continuum_django import ContinuumError
from continuum_django.engine.definitions import ActivityDefinition, Registry, activity
from continuum_django.engine.flow import FlowControlError, Rate, parse_rate


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from continuum_django.engine import definitions

    monkeypatch.setattr(definitions, "registry", Registry())


def charge(customer_id: str, amount: int) -> int:
    return amount


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100/m", Rate(100, 60.0)), ("5/s", Rate(5, 1.0)), ("5/10s", Rate(5, 10.0)),
     (" 2 / h ", Rate(2, 3600.0)), ("1/d", Rate(1, 86400.0))],
)  # fmt: skip
def test_rates_parse(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["100", "0/s", "10/x", "-1/s", "1/0s", "a/m", ""])
def test_a_malformed_rate_is_refused_with_the_form_it_takes(text: str) -> None:
    with pytest.raises(FlowControlError, match=r"must look like '100/m'"):
        activity(rate_limit=text)(charge)


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "3"])
def test_concurrency_must_be_a_positive_int(value: object) -> None:
    with pytest.raises(FlowControlError, match=r"concurrency of activity .* positive int"):
        activity(concurrency=value)(charge)  # type: ignore[call-overload]


def test_a_key_naming_no_parameter_is_refused_at_declaration() -> None:
    with pytest.raises(FlowControlError, match=r"names 'customer', which is not one of its"):
        activity(concurrency=1, concurrency_key="customer")(charge)


def test_a_key_without_a_limit_is_refused() -> None:
    with pytest.raises(FlowControlError, match="no concurrency or rate_limit"):
        activity(concurrency_key="customer_id")(charge)


def test_priority_must_be_an_int() -> None:
    with pytest.raises(FlowControlError, match=r"priority .* must be an int"):
        activity(priority="high")(charge)  # type: ignore[call-overload]


def test_the_key_comes_from_an_argument_passed_by_position_or_name() -> None:
    act: ActivityDefinition[..., int] = activity(concurrency=1, concurrency_key="customer_id")(
        charge
    )
    assert act.flow.payload(act.fn, act.name, ("c-1", 5), {})["key"] == "c-1"
    assert act.flow.payload(act.fn, act.name, (), {"customer_id": 7, "amount": 1})["key"] == "7"


def test_the_key_comes_from_a_function_of_the_arguments() -> None:
    act = activity(rate_limit="10/s", concurrency_key=lambda customer_id, amount: amount > 100)(
        charge
    )
    payload = act.flow.payload(act.fn, act.name, ("c-1", 500), {})
    assert payload == {"priority": 0, "key": "True", "concurrency": None, "rate": [10, 1.0]}


def test_a_key_function_that_raises_names_the_activity() -> None:
    act = activity(concurrency=1, concurrency_key=lambda **kw: kw["nope"])(charge)
    with pytest.raises(FlowControlError, match=r"concurrency key of activity .* KeyError"):
        act.flow.payload(act.fn, act.name, (), {"customer_id": "c", "amount": 1})


def test_with_options_overrides_over_the_declared_ones() -> None:
    act = activity(concurrency=2, concurrency_key="customer_id")(charge)
    faster = act.with_options(rate_limit="5/s", priority=3)
    assert (faster.flow.concurrency, faster.flow.concurrency_key) == (2, "customer_id")
    assert (faster.flow.rate_limit, faster.flow.priority) == (Rate(5, 1.0), 3)
    assert act.flow.rate_limit is None  # the registered one is unchanged


def test_priority_alone_limits_nothing() -> None:
    act = activity(priority=4)(charge)
    assert not act.flow.limited
    assert act.flow.payload(act.fn, act.name, ("c", 1), {}) == {"priority": 4}


def test_the_error_is_a_continuum_error_and_pickles() -> None:
    try:
        activity(rate_limit="fast")(charge)
    except FlowControlError as exc:
        assert isinstance(exc, ContinuumError) and isinstance(exc, ValueError)
        assert str(pickle.loads(pickle.dumps(exc))) == str(exc)


def test_a_key_argument_the_call_did_not_pass_is_named() -> None:
    act = activity(concurrency=1, concurrency_key="customer_id")(charge)
    with pytest.raises(FlowControlError, match=r"argument 'customer_id', which this call"):
        act.flow.payload(act.fn, act.name, (), {"amount": 1})
