"""OpenTelemetry traces and metrics (optional: ``pip install continuum-django[otel]`` and
``CONTINUUM["OPENTELEMETRY"] = True``).

Spans: ``continuum.advance`` around each advance task and ``continuum.activity`` around each
activity attempt. Every advance span's parent is the context that was current when the
run was started (carried in its ``run_started`` event), so one trace shows a request and
the workflow it started, however many workers and days the run takes; an activity
attempt nests in the advance that ran it in-process, or else under the run's start too.
Metrics: ``continuum.runs.started``, ``continuum.runs.ended`` (by ``status``),
``continuum.advances`` (by ``outcome``), ``continuum.activity.attempts`` (by ``outcome``),
``continuum.activity.duration`` (seconds), ``continuum.sweep.items`` (by ``kind``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ImproperlyConfigured

try:
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Status, StatusCode
except ImportError as missing:  # pragma: no cover - exercised only without the extra
    raise ImproperlyConfigured(
        "CONTINUUM['OPENTELEMETRY'] is on but OpenTelemetry is not installed: "
        "pip install 'continuum-django[otel]' (or turn the setting off)"
    ) from missing

from .engine.journal import ActivityClaim, RunClaim, RunStatus
from .engine.observe import Observer
from .engine.replay import Activation
from .models import WorkflowEvent

SCOPE = "continuum_django"
_CARRIERS = 1024  # runs whose start context this process remembers


def start_context() -> dict[str, str]:
    """The current trace context as a carrier to keep with a new run (empty: no trace)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    metrics.get_meter(SCOPE).create_counter("continuum.runs.started").add(1)
    return carrier


class TracingObserver(Observer):
    """Opens spans and records metrics around the runtime's work, then hands every hook to
    ``inner`` (the Django signals)."""

    def __init__(self, inner: Observer, using: str) -> None:
        self.inner = inner
        self.using = using
        self.tracer = trace.get_tracer(SCOPE)
        meter = metrics.get_meter(SCOPE)
        self.ended = meter.create_counter("continuum.runs.ended")
        self.advances = meter.create_counter("continuum.advances")
        self.attempts = meter.create_counter("continuum.activity.attempts")
        self.durations = meter.create_histogram("continuum.activity.duration", unit="s")
        self.swept_items = meter.create_counter("continuum.sweep.items")
        self._carriers: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def _start_of(self, run_id: str, started: dict[str, Any] | None) -> Context | None:
        """The context the run was started in, from ``started`` or its first event."""
        if started is not None:
            carrier = started.get("trace") or {}
        else:
            with self._lock:
                known = self._carriers.get(run_id)
            if known is None:
                events = WorkflowEvent.objects.using(self.using)
                first = events.filter(run__pk=run_id, seq=1)
                known = first.values_list("payload__trace", flat=True).first() or {}
                with self._lock:
                    self._carriers[run_id] = known
                    while len(self._carriers) > _CARRIERS:
                        self._carriers.popitem(last=False)
            carrier = known
        return propagate.extract(carrier) if carrier else None

    @contextmanager
    def advancing(self, run_id: str, started: dict[str, Any] | None) -> Iterator[Any]:
        attributes = {"continuum.run_id": run_id}
        parent = self._start_of(run_id, started)
        with (
            self.tracer.start_as_current_span(
                "continuum.advance", context=parent, attributes=attributes
            ) as span,
            self.inner.advancing(run_id, started),
        ):
            yield span

    def advanced(self, claim: RunClaim, activation: Activation) -> None:
        span = trace.get_current_span()
        span.set_attribute("continuum.workflow", claim.workflow_name)
        span.set_attribute("continuum.outcome", activation.outcome)
        self.advances.add(1, {"outcome": activation.outcome, "workflow": claim.workflow_name})
        if activation.outcome in RunStatus.TERMINAL:
            self.ended.add(1, {"status": activation.outcome, "workflow": claim.workflow_name})
        self.inner.advanced(claim, activation)

    def parked(self, run_id: str, reason: str, detail: str) -> None:
        trace.get_current_span().add_event("continuum.parked", {"reason": reason})
        self.inner.parked(run_id, reason, detail)

    @contextmanager
    def attempting(self, claim: ActivityClaim) -> Iterator[Any]:
        current = trace.get_current_span()
        parent = None if current.get_span_context().is_valid else self._start_of(claim.run_id, None)
        attributes: dict[str, str | int] = {
            "continuum.run_id": claim.run_id,
            "continuum.activity": claim.activity,
            "continuum.attempt": claim.attempt,
            "continuum.task_id": claim.task_id,
        }
        with (
            self.tracer.start_as_current_span(
                "continuum.activity", context=parent, attributes=attributes
            ) as span,
            self.inner.attempting(claim),
        ):
            yield span

    def attempted(
        self, claim: ActivityClaim, outcome: str, error: dict[str, Any] | None, seconds: float
    ) -> None:
        span = trace.get_current_span()
        span.set_attribute("continuum.outcome", outcome)
        if error is not None:
            span.set_status(
                Status(StatusCode.ERROR, f"{error.get('type')}: {error.get('message')}")
            )
        labels = {"outcome": outcome, "activity": claim.activity}
        self.attempts.add(1, labels)
        self.durations.record(seconds, labels)
        self.inner.attempted(claim, outcome, error, seconds)

    def swept(self, counts: dict[str, int], seconds: float) -> None:
        for kind, count in counts.items():
            self.swept_items.add(count, {"kind": kind})
        self.inner.swept(counts, seconds)
