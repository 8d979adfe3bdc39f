"""A real headless Chromium drives the admin: log in, read a run's timeline, signal, cancel,
triage a failed run at 1400 px and retry it.

Debian's ``chromium`` package provides the browser (Playwright never downloads its own
here); `.ci/run` installs it. Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connections
from playwright.sync_api import Page, expect, sync_playwright

from continuum_django.models import WorkflowRun
from example_project.orders.workflows import fulfil_order
from tests.conftest import REPO_ROOT
from tests.testapp import reliability as rl

from .helpers import wait_until

if TYPE_CHECKING:
    from tests.conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SHOTS = REPO_ROOT / "test-artifacts" / "browser"
ITEMS = [
    {"sku": "book", "qty": 2, "price_cents": 1500},
    {"sku": "mug", "qty": 1, "price_cents": 900},
]


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium", pytrace=False)
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()
            # Inside Playwright's loop, Django's connections are context-local: the ones this
            # test opened here must be closed here, or they outlive the test database.
            connections.close_all()


def awaiting_approval(run_id: str) -> bool:
    return WorkflowRun.objects.filter(
        pk=run_id, status="suspended", attributes__stage="awaiting approval"
    ).exists()


def start_order(order_id: str) -> str:
    return str(fulfil_order.options(namespace="shop").start(order_id, ITEMS).id)


def log_in(page: Page, live_server: Any, then: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next={then}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")


def overflow(page: Page) -> dict[str, int]:
    """How wide the page and the run list's table are, against the room they have."""
    return page.evaluate(  # type: ignore[no-any-return]
        """() => {
            const results = document.querySelector("#changelist .results");
            return {page: document.documentElement.scrollWidth,
                    table: results.scrollWidth, room: results.clientWidth};
        }"""
    )


def test_admin_in_a_real_browser(
    worker_factory: Callable[..., WorkerProcess],
    live_server: Any,
    admin_user: Any,
    page: Page,
) -> None:
    worker_factory()
    to_approve = start_order("o-approve")
    to_cancel = start_order("o-cancel")
    wait_until(lambda: awaiting_approval(to_approve) and awaiting_approval(to_cancel))

    log_in(page, live_server, "/admin/continuum/workflowrun/")
    expect(page.locator("#result_list")).to_contain_text("orders.fulfil")
    expect(page.locator("#result_list")).to_contain_text("signal approval until")
    page.screenshot(path=str(SHOTS / "run-list.png"), full_page=True)

    # The run page: metadata, the timeline (an open wait for the approval signal), history.
    page.goto(f"{live_server.url}/admin/continuum/workflowrun/{to_approve}/change/")
    timeline = page.locator("svg.cn-timeline")
    expect(timeline).to_be_visible()
    expect(timeline.locator("g.cn-activity.cn-completed")).to_have_count(2)
    expect(timeline.locator("g.cn-signal.cn-open")).to_have_count(1)

    # Send the approval through the form; the worker ships the order.
    page.click("text=Send a signal")
    page.fill("#id_name", "approval")
    page.fill("#id_payload", '"approved"')
    page.click("input[type=submit][value=Send]")
    expect(page.locator("ul.messagelist")).to_contain_text("Signal 'approval' sent")
    wait_until(
        lambda: WorkflowRun.objects.filter(pk=to_approve, status="completed").exists(),
        what="the approved order to ship",
    )
    page.reload()
    expect(page.locator(".cn-status-completed").first).to_be_visible()
    expect(timeline.locator("g.cn-activity.cn-completed")).to_have_count(2)
    expect(timeline.locator("g.cn-child.cn-completed")).to_have_count(1)  # shipping
    page.screenshot(path=str(SHOTS / "run-page.png"), full_page=True)

    # Cancel the other order through its form; the workflow refunds, then ends cancelled.
    page.goto(f"{live_server.url}/admin/continuum/workflowrun/{to_cancel}/change/")
    page.click("ul.object-tools >> text=Cancel")
    page.fill("#id_reason", "customer called")
    page.click("input[type=submit][value='Cancel the run']")
    expect(page.locator("ul.messagelist")).to_contain_text("Cancellation of run")
    wait_until(
        lambda: WorkflowRun.objects.filter(pk=to_cancel, status="cancelled").exists(),
        what="the cancelled order to end",
    )
    page.reload()
    expect(page.locator("#history")).to_contain_text("customer called")
    expect(page.locator("#activity-tasks")).to_contain_text("refund_charge")
    page.screenshot(path=str(SHOTS / "run-cancelled.png"), full_page=True)


def test_a_failed_run_is_triaged_and_retried_in_a_real_browser(
    worker_factory: Callable[..., WorkerProcess],
    live_server: Any,
    admin_user: Any,
    page: Page,
    tmp_path: Path,
) -> None:
    worker_factory()
    needed = tmp_path / "config.txt"
    run_id = str(rl.needs_file_workflow.start(str(needed)).id)
    wait_until(
        lambda: WorkflowRun.objects.filter(pk=run_id, status="failed").exists(),
        what="the run to fail at its activity",
    )
    start_order("o-waiting")  # a second row, waiting for its approval

    # The list at 1400 px: every column inside the page, the failing run found by its filter.
    log_in(page, live_server, "/admin/continuum/workflowrun/?triage=failing")
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("ValueError")
    expect(row).to_contain_text("config.txt is missing")
    expect(row.locator("td.field-attempt")).to_have_text("2/2")
    page.goto(f"{live_server.url}/admin/continuum/workflowrun/")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    sizes = overflow(page)
    assert sizes["page"] <= 1400 and sizes["table"] <= sizes["room"], sizes
    page.screenshot(path=str(SHOTS / "run-list-triage.png"))

    # The run page says why it failed; the operator fixes the cause and retries it.
    page.goto(f"{live_server.url}/admin/continuum/workflowrun/{run_id}/change/")
    expect(page.locator(".field-trouble")).to_contain_text("config.txt is missing")
    needed.write_text("configured")
    page.click("ul.object-tools >> text=Retry")
    page.fill("#id_reason", "config restored")
    page.click("input[type=submit][value=Retry]")
    expect(page.locator("ul.messagelist")).to_contain_text("reopened")
    wait_until(
        lambda: WorkflowRun.objects.filter(pk=run_id, status="completed").exists(),
        what="the retried run to complete",
    )
    page.reload()
    expect(page.locator(".cn-status-completed").first).to_be_visible()
    expect(page.locator("#history")).to_contain_text("activity_retry_scheduled")
    expect(page.locator("#history")).to_contain_text("config restored")
    page.screenshot(path=str(SHOTS / "run-retried.png"), full_page=True)
