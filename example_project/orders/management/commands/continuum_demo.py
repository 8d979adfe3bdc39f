"""`manage.py continuum_demo`: one order placed, approved and fulfilled by a real Celery worker."""

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from argparse import ArgumentParser
from contextlib import suppress
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.test import Client
from django.test.utils import override_settings

import continuum_django as continuum
import example_project

PROJECT_ROOT = Path(example_project.__file__).resolve().parent.parent
WORKER_ARGV = [
    sys.executable, "-m", "celery", "-A", "example_project", "worker",
    "-Q", "continuum,celery", "-B", "-c", "2", "-l", "warning",
]  # fmt: skip
STOP_TIMEOUT = 30.0


class Command(BaseCommand):
    help = "Run the example shop end to end: migrate, start a worker, fulfil one order."
    run_id = ""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="seconds to wait for the order (60)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        log_path = Path(tempfile.mkstemp(prefix="continuum-demo-worker-", suffix=".log")[1])
        worker = self._start_worker(log_path)
        try:
            self._run_order(worker, options["timeout"])
        except (continuum.ContinuumError, CommandError) as exc:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            raise CommandError(f"{exc}\n--- worker log ({log_path}) ---\n{tail}") from exc
        finally:
            self._stop_worker(worker)
        log_path.unlink()
        self.stdout.write(
            "\nTo see this run (its history, timeline and activities) in the admin:\n"
            "  .venv/bin/python manage.py createsuperuser\n"
            "  .venv/bin/python manage.py continuum_seed   # optional: orders in other states\n"
            "  DEBUG=true .venv/bin/python manage.py runserver\n"
            f"  then open http://127.0.0.1:8000/admin/continuum/workflowrun/{self.run_id}/change/"
        )

    def _start_worker(self, log_path: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE}
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                WORKER_ARGV,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we can stop pool and beat too
            )
        self.stdout.write(f"Celery worker started (pid {worker.pid}, log {log_path}).")
        return worker

    def _run_order(self, worker: subprocess.Popen[bytes], timeout: float) -> None:
        order_id = f"demo-{uuid.uuid4().hex[:8]}"
        items = [
            {"sku": "book", "qty": 2, "price_cents": 1500},
            {"sku": "pen", "qty": 1, "price_cents": 250},
        ]
        # The test client calls the views in this process, as a browser would over HTTP.
        with override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"]):
            client = Client()
            placed = client.post(
                "/orders/", {"order_id": order_id, "items": items}, content_type="application/json"
            )
            if placed.status_code != 202:
                raise CommandError(
                    f"placing the order failed: {placed.status_code} {placed.content!r}"
                )
            run_id = self.run_id = placed.json()["run_id"]
            self.stdout.write(f"Order {order_id} placed: workflow run {run_id}.")

            approved = client.post(f"/orders/{run_id}/approve")
            if approved.status_code != 202:
                raise CommandError(f"approval failed: {approved.status_code} {approved.content!r}")
            self.stdout.write("Order approved (signal 'approval' sent); waiting for the worker...")

            value = self._wait_for_result(worker, run_id, timeout)
            status = client.get(f"/orders/{run_id}").json()

        self.stdout.write(f"\nRun {run_id} is {status['status']}. History:")
        for seq, event_type in enumerate(status["history"], start=1):
            self.stdout.write(f"  {seq:>3}  {event_type}")
        self.stdout.write(self.style.SUCCESS(f"\nResult: {value}"))

    def _wait_for_result(self, worker: subprocess.Popen[bytes], run_id: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if worker.poll() is not None:
                raise CommandError(f"the Celery worker exited with code {worker.returncode}")
            try:
                return continuum.result(run_id, timeout=1)
            except TimeoutError:  # ResultTimeout; check on the worker, then wait again
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"run {run_id} did not finish within {timeout:.0f}s"
                    ) from None

    def _stop_worker(self, worker: subprocess.Popen[bytes]) -> None:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # warm shutdown of the main process
            try:
                worker.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.stderr.write("The worker did not stop in time; killing it.")
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # whatever of the group is left
        worker.wait()
        self.stdout.write("Celery worker stopped.")
