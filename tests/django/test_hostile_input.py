"""Hostile input at every entry point, on real Postgres: a clear error, and nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import reverse

import continuum_django as continuum
from continuum_django import PayloadError
from continuum_django.models import ActivityTask, Signal, Timer, WorkflowEvent, WorkflowRun
from tests.testapp import workflows as wf
from tests.testapp.reliability import takes_anything

pytestmark = pytest.mark.django_db

SMALL_LIMIT = 2000  # CONTINUUM["MAX_PAYLOAD_BYTES"] in these tests, so "too big" stays cheap


def nested(levels: int, leaf: Any = None) -> Any:
    value: Any = [] if leaf is None else leaf
    for _ in range(levels - (leaf is None)):
        value = [value]
    return value


# Values the journal must refuse, each with the words its PayloadError must hold.
HOSTILE_VALUES: dict[str, tuple[Any, str]] = {
    "480 deep": (nested(480), "nested deeper than 64 levels"),
    "100,000 deep": (nested(100_000), "nested deeper than 64 levels"),
    "NUL in a string": ({"name": "a\x00b"}, "['name'] contains a NUL character"),
    "NUL in a key": ({"a\x00": 1}, "has a key 'a\\x00' that contains a NUL"),
    "lone surrogate": (["ok", "\ud800"], "[1] contains the surrogate code point U+D800"),
    "surrogate in a key": ({"\udc00": 1}, "U+DC00"),
    "huge int": ([10**5000], "[0] is an int of more than 1000 digits"),
    "over the size limit": ("x" * (SMALL_LIMIT + 1), f"over the limit of {SMALL_LIMIT} bytes"),
    "not JSON": ({"when": object()}, "['when'] is a builtins.object"),
}

# Identifier fields: each with a value too long for its column, and strings no column holds.
IDENTIFIERS = {
    "idempotency_key": 255,
    "namespace": 100,
    "signal name": 200,
    "dedupe_key": 255,
    "workflow name": 200,
    "cancel reason": 500,
}
BAD_TEXT: dict[str, tuple[Callable[[int], Any], str]] = {
    "too long": (lambda limit: "k" * (limit + 1), "characters long, over the limit of {limit}"),
    "NUL": (lambda limit: "k\x00", "contains a NUL character"),
    "surrogate": (lambda limit: "k\udfff", "surrogate code point U+DFFF"),
    "not a str": (lambda limit: 7, "must be a str, not int"),
}


def rows() -> tuple[int, ...]:
    return tuple(
        model.objects.count() for model in (WorkflowRun, WorkflowEvent, Signal, ActivityTask, Timer)
    )


@pytest.fixture(autouse=True)
def small_limit() -> Iterator[None]:
    with override_settings(CONTINUUM={"MAX_PAYLOAD_BYTES": SMALL_LIMIT}):
        yield


@pytest.fixture
def waiting_run() -> continuum.RunHandle:
    return wf.waiter.start()


PAYLOAD_ENTRY_POINTS: dict[str, Callable[[Any, continuum.RunHandle], Any]] = {
    "start args": lambda value, run: wf.three_steps.start(value),
    "start kwargs": lambda value, run: continuum.start(wf.three_steps, kwargs={"x": value}),
    "start attributes": lambda value, run: continuum.start(
        wf.three_steps, args=[1], attributes={"k": value}
    ),
    "options attributes": lambda value, run: wf.three_steps.options(attributes={"k": value}).start(
        1
    ),
    "start by name": lambda value, run: continuum.start("tests.three_steps", args=[value]),
    "signal": lambda value, run: continuum.signal(run.id, "go", value),
    "handle signal": lambda value, run: run.signal("go", value),
}


@pytest.mark.parametrize("entry", PAYLOAD_ENTRY_POINTS)
@pytest.mark.parametrize("hostile", HOSTILE_VALUES)
def test_payload_entry_points_refuse_hostile_values(
    entry: str, hostile: str, waiting_run: continuum.RunHandle
) -> None:
    value, words = HOSTILE_VALUES[hostile]
    before = rows()
    with pytest.raises(PayloadError) as info:
        PAYLOAD_ENTRY_POINTS[entry](value, waiting_run)
    assert words in str(info.value)
    assert rows() == before


def test_a_start_names_the_path_into_its_input() -> None:
    items = [{"sku": "book"}] * 3 + [{"sku": "pen", "name": "a\x00"}]
    with pytest.raises(PayloadError) as info:
        continuum.start(takes_anything, kwargs={"items": items})
    assert str(info.value).startswith(
        "input of workflow 'tests.takes_anything': input.kwargs['items'][3]['name'] contains a NUL"
    )
    assert not WorkflowRun.objects.exists()


def test_args_and_kwargs_count_together_against_the_size_limit() -> None:
    half = "x" * (SMALL_LIMIT // 2)
    with pytest.raises(PayloadError, match=f"over the limit of {SMALL_LIMIT} bytes"):
        continuum.start(takes_anything, args=[half], kwargs={"y": half})
    assert not WorkflowRun.objects.exists()


def test_the_depth_limit_is_a_setting() -> None:
    with override_settings(CONTINUUM={"MAX_PAYLOAD_DEPTH": 3}):
        wf.three_steps.start(nested(2))  # the args list is the first level
        with pytest.raises(PayloadError, match=r"input\.args\[0\]\[0\]\[0\] is nested deeper"):
            wf.three_steps.start(nested(3))
        assert WorkflowRun.objects.count() == 1
    with (
        override_settings(CONTINUUM={"MAX_PAYLOAD_DEPTH": 10_000}),
        pytest.raises(ImproperlyConfigured, match=r"MAX_PAYLOAD_DEPTH'\] is 10000; use an int"),
    ):
        wf.three_steps.start(1)


def _identifier_call(field: str, value: Any, run: continuum.RunHandle) -> Any:
    if field in ("idempotency_key", "namespace"):
        return continuum.start(wf.three_steps, args=[1], **{field: value})
    if field == "workflow name":
        return continuum.start(value, args=[1])
    if field == "signal name":
        return continuum.signal(run.id, value, 1)
    if field == "dedupe_key":
        return run.signal("go", 1, dedupe_key=value)
    return run.cancel(reason=value)


@pytest.mark.parametrize("field", IDENTIFIERS)
@pytest.mark.parametrize("bad", BAD_TEXT)
def test_identifiers_are_checked_against_their_columns(
    field: str, bad: str, waiting_run: continuum.RunHandle
) -> None:
    make, words = BAD_TEXT[bad]
    limit = IDENTIFIERS[field]
    before = rows()
    with pytest.raises(ValueError) as info:
        _identifier_call(field, make(limit), waiting_run)
    message = str(info.value)
    assert message.startswith(field), message
    assert words.format(limit=limit) in message
    assert rows() == before
    assert not waiting_run.get().cancel_requested


def test_identifiers_at_their_limit_are_stored(waiting_run: continuum.RunHandle) -> None:
    run = continuum.start(wf.three_steps, args=[1], idempotency_key="k" * 255, namespace="n" * 100)
    assert (len(run.get().idempotency_key or ""), len(run.get().namespace)) == (255, 100)
    waiting_run.signal("s" * 200, 1, dedupe_key="d" * 255)
    waiting_run.cancel(reason="r" * 500)
    assert waiting_run.get().cancel_requested


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"idempotency_key": "k" * 256}, "idempotency_key is 256 characters long"),
        ({"namespace": "shop\x00"}, "namespace contains a NUL character"),
        ({"namespace": ""}, "namespace must not be empty"),
        ({"attributes": ["not", "a", "dict"]}, "attributes must be a dict, not list"),
    ],
)
def test_options_refuse_bad_start_options_at_once(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        wf.three_steps.options(**options)
    assert rows() == (0, 0, 0, 0, 0)


def test_options_refuse_an_unknown_option() -> None:
    with pytest.raises(TypeError, match="idempotencykey"):
        wf.three_steps.options(idempotencykey="x")


# -- the admin's signal form --------------------------------------------------------------


@pytest.fixture
def signaller(django_user_model: Any) -> Client:
    user = django_user_model.objects.create_user("signaller", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="continuum", codename__in=["view_workflowrun", "signal_run"]
        )
    )
    client = Client()
    client.force_login(user)
    return client


HOSTILE_FORMS: dict[str, tuple[dict[str, str], str]] = {
    "480 deep": ({"payload": "[" * 480 + "]" * 480}, "nested deeper than 64 levels"),
    "100,000 deep": ({"payload": "[" * 100_000 + "]" * 100_000}, "nested deeper than 64 levels"),
    "escaped NUL": ({"payload": '{"a": "x\\u0000"}'}, "contains a NUL character"),
    "escaped surrogate": ({"payload": '"\\ud800"'}, "surrogate code point U+D800"),
    "surrogate key": ({"payload": '{"\\udbff": 1}'}, "U+DBFF"),
    "huge int": ({"payload": "9" * 4000}, "int of more than 1000 digits"),
    "int past Python's limit": ({"payload": "9" * 5000}, "The payload is not valid JSON"),
    "over the size limit": (
        {"payload": json.dumps("x" * SMALL_LIMIT)},
        f"over the limit of {SMALL_LIMIT} bytes",
    ),
    "NUL in the name": ({"name": "go\x00"}, "Null characters are not allowed"),
    "name too long": ({"name": "g" * 201}, "at most 200 characters"),
    "NUL in the dedupe key": ({"dedupe_key": "k\x00"}, "Null characters are not allowed"),
}


@pytest.mark.parametrize("hostile", HOSTILE_FORMS)
def test_admin_signal_form_turns_hostile_input_into_form_errors(
    hostile: str, signaller: Client, waiting_run: continuum.RunHandle
) -> None:
    fields, words = HOSTILE_FORMS[hostile]
    form = {"name": "go", "payload": "1", "dedupe_key": "", **fields}
    before = rows()
    url = reverse("admin:continuum_run_signal", args=[waiting_run.id])
    response = signaller.post(url, form)
    assert response.status_code == 200
    assert words in response.content.decode()
    assert rows() == before


# -- the example shop ------------------------------------------------------------------------

ITEM = {"sku": "book", "qty": 1, "price_cents": 1500}
HOSTILE_ORDERS: dict[str, tuple[bytes, str]] = {
    "480 deep items": (
        json.dumps({"order_id": "o-1", "items": [ITEM, nested(480)]}).encode(),
        "nested deeper than 64 levels",
    ),
    "100,000 deep body": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "NUL in an item": (
        json.dumps({"items": [{**ITEM, "note": "a\x00"}]}).encode(),
        "input.args[1][0]['note'] contains a NUL",
    ),
    "surrogate customer": (
        b'{"customer": "\\ud800", "items": [{"sku": "book"}]}',
        "attributes['customer'] contains the surrogate",
    ),
    "NUL order id": (
        json.dumps({"order_id": "o\x00", "items": [ITEM]}).encode(),
        "idempotency_key contains a NUL",
    ),
    "order id too long": (
        json.dumps({"order_id": "o" * 300, "items": [ITEM]}).encode(),
        "idempotency_key is 306 characters long, over the limit of 255",
    ),
    "huge int": (
        json.dumps({"items": [{**ITEM, "qty": 10**4000}]}).encode(),
        "int of more than 1000 digits",
    ),
    "int past Python's limit": (
        b'{"items": [{"sku": "book", "qty": ' + b"9" * 5000 + b"}]}",
        "the body must be JSON",
    ),
    "not UTF-8": (b'{"items": ["\xff"]}', "the body must be JSON"),
    "order id not a string": (
        json.dumps({"order_id": [1], "items": [ITEM]}).encode(),
        "'order_id' must be a string or a number",
    ),
}


@pytest.mark.parametrize("hostile", HOSTILE_ORDERS)
def test_the_shop_answers_hostile_orders_with_400(hostile: str, client: Client) -> None:
    body, words = HOSTILE_ORDERS[hostile]
    response = client.post("/orders/", body, content_type="application/json")
    assert response.status_code == 400
    assert words in response.json()["error"]
    assert rows() == (0, 0, 0, 0, 0)


def test_the_shop_refuses_a_hostile_cancel_reason(
    client: Client, waiting_run: continuum.RunHandle
) -> None:
    before = rows()
    response = client.post(f"/orders/{waiting_run.id}/cancel", {"reason": "r" * 501})
    assert response.status_code == 400
    assert "cancel reason is 501 characters long" in response.json()["error"]
    assert rows() == before and not waiting_run.get().cancel_requested
