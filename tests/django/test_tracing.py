"""OpenTelemetry: one trace from the request that starts a run through every advance and
activity attempt, and metrics for runs, attempts and sweeps (issue 16, item 7)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import continuum_django as continuum
from continuum_django.lifecycle import SignalObserver
from continuum_django.tracing import TracingObserver
from tests.contract.conftest import OrmHarness
from tests.testapp import reliability as rl
from tests.testapp import workflows as wf

pytestmark = pytest.mark.django_db(transaction=True)

# OpenTelemetry's providers are set once per process.
SPANS = InMemorySpanExporter()
METRICS = InMemoryMetricReader()
_tracer_provider = TracerProvider()
_tracer_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_tracer_provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[METRICS]))


@pytest.fixture
def traced() -> Iterator[OrmHarness]:
    SPANS.clear()
    with override_settings(CONTINUUM={**settings.CONTINUUM, "OPENTELEMETRY": True}):
        harness = OrmHarness()
        harness.runtime.observer = TracingObserver(SignalObserver(), "default")
        yield harness


def _sums() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    data = METRICS.get_metrics_data()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted((point.attributes or {}).items())))
                    out[key] = getattr(point, "value", getattr(point, "count", 0))
    return out


def test_every_advance_and_attempt_joins_the_trace_that_started_the_run(
    traced: OrmHarness,
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /orders/") as request:
        run = continuum.start(wf.three_steps, args=[1])
    traced.sent.runs.append(run.id)
    traced.drain()  # each advance and attempt separately, as separate workers would

    spans = SPANS.get_finished_spans()
    advances = [s for s in spans if s.name == "continuum.advance"]
    attempts = [s for s in spans if s.name == "continuum.activity"]
    assert len(advances) == 4 and len(attempts) == 3
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in advances + attempts} == {trace_id}
    assert {s.parent.span_id for s in advances + attempts} == {request.get_span_context().span_id}
    assert advances[-1].attributes["continuum.outcome"] == "completed"
    assert {s.attributes["continuum.outcome"] for s in attempts} == {"completed"}
    assert all(s.attributes["continuum.run_id"] == run.id for s in advances + attempts)


def test_an_attempt_run_in_process_nests_in_its_advance(traced: OrmHarness) -> None:
    traced.runtime = traced.make_runtime("worker-b", eager_steps=50)
    traced.runtime.observer = TracingObserver(SignalObserver(), "default")
    run = continuum.start(wf.three_steps, args=[1])
    traced.sent.runs.append(run.id)
    traced.drain()
    spans = SPANS.get_finished_spans()
    (advance,) = [s for s in spans if s.name == "continuum.advance"]
    attempts = [s for s in spans if s.name == "continuum.activity"]
    assert len(attempts) == 3
    assert {s.parent.span_id for s in attempts} == {advance.context.span_id}


def test_metrics_count_runs_attempts_and_sweeps(traced: OrmHarness) -> None:
    rl.FIXED.clear()
    before = _sums()
    failing = traced.start(rl.retry_me)
    traced.drain()
    traced.runtime.sweep()
    after = _sums()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    flaky = rl.flaky_until_fixed.name
    assert grew("continuum.activity.attempts", outcome="retrying", activity=flaky) == 1
    assert grew("continuum.activity.attempts", outcome="failed", activity=flaky) == 1
    assert grew("continuum.runs.ended", status="failed", workflow="tests.retry_me") == 1
    assert grew("continuum.sweep.items", kind="timers_fired") == 0
    assert ("continuum.sweep.items", (("kind", "runs_redispatched"),)) in after
    assert traced.run(failing)["status"] == "failed"
