"""Signal-with-start and published state on real Postgres: atomicity, races, reads, admin."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse

import continuum_django as continuum
from continuum_django import PayloadError, RunNotActive, SignalRejected
from continuum_django.models import Signal, WorkflowEvent, WorkflowRun
from continuum_django.redaction import SECRET_MARK
from continuum_django.worker import runtime
from tests.testapp import interaction

CARD = "4111111111111111"


def drive(run_id: str) -> None:
    """Advance the run in this process until it waits or ends (no worker needed here)."""
    engine = runtime()
    for _ in range(30):
        engine.advance_run(run_id)
        run = continuum.get_run(run_id)
        tasks = list(run.activity_tasks.filter(status="scheduled"))
        if not tasks:
            return
        for task in tasks:
            engine.execute_activity(task.id)


@pytest.mark.django_db
def test_the_forms_start_one_run_and_deliver_each_signal() -> None:
    run = interaction.collector.signal_with_start("add", "a", 3, idempotency_key="basket-1")
    stored = run.get()
    assert (stored.status, stored.input["args"]) == ("pending", [3])
    assert Signal.objects.filter(run_id=run.id, name="add").count() == 1
    assert [e.type for e in run.history()] == ["run_started"]

    again = interaction.collector.options(idempotency_key="basket-1").signal_with_start(
        "add", "b", 3
    )
    by_name = continuum.signal_with_start(
        "tests.interaction.collector", "add", "c", args=[3], idempotency_key="basket-1",
        dedupe_key="c-1",
    )  # fmt: skip
    continuum.signal_with_start(
        interaction.collector, "add", "c", args=[3], idempotency_key="basket-1", dedupe_key="c-1"
    )
    assert again.id == by_name.id == run.id
    assert WorkflowRun.objects.count() == 1
    assert Signal.objects.filter(run_id=run.id).count() == 3  # the repeated dedupe key: once
    drive(run.id)
    assert continuum.result(run.id, timeout=5) == ["a", "b", "c"]
    assert continuum.state(run.id) == {"count": 3}


@pytest.mark.django_db
def test_options_apply_to_the_run_it_starts() -> None:
    run = interaction.collector.options(
        idempotency_key="k", namespace="shop", attributes={"customer": "c-9"}
    ).signal_with_start("add", 1, 1)
    stored = run.get()
    assert (stored.namespace, stored.attributes, stored.idempotency_key) == (
        "shop", {"customer": "c-9"}, "k",
    )  # fmt: skip
    # The key is per namespace, as for start: another namespace makes another run.
    other = interaction.collector.signal_with_start("add", 1, 1, idempotency_key="k")
    assert other.id != run.id


@pytest.mark.django_db
def test_a_rolled_back_transaction_started_and_signalled_nothing() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        interaction.collector.signal_with_start("add", "a", 1, idempotency_key="gone")
        raise RuntimeError("the view failed")
    assert not WorkflowRun.objects.exists()
    assert not Signal.objects.exists()


@pytest.mark.django_db
def test_bad_input_is_refused_before_anything_is_stored() -> None:
    with pytest.raises(ValueError, match="signal_with_start needs an idempotency_key"):
        continuum.signal_with_start(interaction.collector, "add", 1, args=[1])
    with pytest.raises(ValueError, match="signal_with_start needs an idempotency_key"):
        interaction.collector.options(namespace="shop").signal_with_start("add", 1, 1)
    with pytest.raises(SignalRejected, match="declares no signal 'nmae'"):
        interaction.greeter.signal_with_start("nmae", "Ada", "Hello", idempotency_key="g")
    with pytest.raises(SignalRejected, match="name"):
        interaction.greeter.signal_with_start("name", 42, "Hello", idempotency_key="g")
    with pytest.raises(PayloadError, match="payload of signal 'add'"):
        interaction.collector.signal_with_start("add", object(), 1, idempotency_key="g")
    with pytest.raises(TypeError, match="cannot take these arguments"):
        interaction.collector.signal_with_start("add", 1, idempotency_key="g")
    assert not WorkflowRun.objects.exists()
    assert not Signal.objects.exists()


@pytest.mark.django_db
def test_an_ended_run_holding_the_key_is_not_restarted() -> None:
    run = interaction.collector.signal_with_start("add", "only", 1, idempotency_key="done")
    drive(run.id)
    assert run.status() == "completed"
    with pytest.raises(RunNotActive, match="is completed; it cannot take signal 'add'"):
        interaction.collector.signal_with_start("add", "late", 1, idempotency_key="done")
    assert WorkflowRun.objects.count() == 1
    assert Signal.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_callers_make_one_run_and_deliver_every_signal() -> None:
    callers = 8
    barrier = threading.Barrier(callers)
    ids: list[str] = []
    failures: list[BaseException] = []

    def call(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            run = interaction.collector.signal_with_start("add", n, callers, idempotency_key="race")
            ids.append(run.id)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(set(ids)) == 1 and WorkflowRun.objects.count() == 1
    drive(ids[0])
    assert sorted(continuum.result(ids[0], timeout=5)) == list(range(callers))


def _waiting_on_locks() -> int:
    """How many other sessions of this database wait for a lock right now."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_callers_that_race_an_uncommitted_start_signal_the_run_it_commits() -> None:
    """The first caller holds its new run uncommitted until the others are blocked on it
    (seen in pg_stat_activity, not guessed with a sleep); then each finds that run."""
    others = 4
    inserted, release = threading.Event(), threading.Event()
    ids: list[str] = []
    failures: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                ids.append(
                    interaction.collector.signal_with_start(
                        "add", 0, 1 + others, idempotency_key="held"
                    ).id
                )
                inserted.set()
                assert release.wait(timeout=60)
        except BaseException as exc:
            failures.append(exc)
            inserted.set()
        finally:
            connection.close()

    def later(n: int) -> None:
        try:
            ids.append(
                interaction.collector.signal_with_start(
                    "add", n, 1 + others, idempotency_key="held"
                ).id
            )
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=first)
    holder.start()
    assert inserted.wait(timeout=60)
    racers = [threading.Thread(target=later, args=(n,)) for n in range(1, others + 1)]
    for thread in racers:
        thread.start()
    try:
        for _ in range(6000):  # bounded poll of a database fact, not a timing guess
            if _waiting_on_locks() >= others:
                break
            threading.Event().wait(0.01)
        else:
            pytest.fail("the racing callers never blocked on the uncommitted run")
    finally:
        release.set()
        holder.join()
        for thread in racers:
            thread.join()
    assert not failures
    assert len(set(ids)) == 1 and WorkflowRun.objects.count() == 1
    assert Signal.objects.filter(run_id=ids[0]).count() == 1 + others
    drive(ids[0])
    assert sorted(continuum.result(ids[0], timeout=5)) == list(range(1 + others))


@pytest.mark.django_db
def test_state_is_read_from_the_run_row_without_replay(
    django_assert_num_queries: Any,
) -> None:
    run = interaction.progress.start(2)
    drive(run.id)
    expected = {"stage": "waiting", "done": 2, "card": {"card_number": CARD, "last4": "1111"}}
    with django_assert_num_queries(1):
        assert continuum.state(run.id) == expected
    assert continuum.get_run(run.id).state == expected
    assert run.state() == expected
    assert WorkflowEvent.objects.filter(run_id=run.id, type="state_published").count() == 5
    with override_settings(CONTINUUM={"REDACT": "tests.django.redact.secrets"}):
        assert continuum.state(run.id)["card"]["card_number"] == CARD  # the program's read
        shown = continuum.state(run.id, redact=True)
    assert shown["card"] == {"card_number": SECRET_MARK, "last4": "1111"}
    run.signal("go")
    drive(run.id)
    assert continuum.state(run.id)["stage"] == "finished"


@pytest.mark.django_db
def test_state_of_a_chain_is_its_live_tips() -> None:
    run = interaction.relay.start(1)
    for _ in range(3):
        drive(str(continuum.get_run(run.id).id))
        tip = WorkflowRun.objects.exclude(status="continued").get()
        drive(str(tip.id))
    assert continuum.result(run.id, timeout=5) == 3
    assert continuum.state(run.id) == {"first_lap": "seen", "lap": 3}
    assert continuum.get_run(run.id).state == {"first_lap": "seen", "lap": 1}  # exactly that run


@pytest.mark.django_db
def test_the_run_page_shows_the_state_and_the_publish_events_redacted(
    admin_client: Client,
) -> None:
    run = interaction.progress.start(1)
    drive(run.id)
    with override_settings(CONTINUUM={"REDACT": "tests.django.redact.secrets"}):
        html = admin_client.get(
            reverse("admin:continuum_workflowrun_change", args=[run.id])
        ).content.decode()
    assert "Published state" in html
    assert CARD not in html
    assert SECRET_MARK in html
    assert "&quot;last4&quot;: &quot;1111&quot;" in html
    assert "&quot;stage&quot;: &quot;waiting&quot;" in html
    assert "cn-event-state_published" in html
    assert "<code>3:publish:card</code>" in html
    assert "publish stage" in html  # the timeline's mark for each publish
