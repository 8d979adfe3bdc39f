"""The scale phase's plumbing: its options, sizes, slowdowns and targets (no services)."""

from __future__ import annotations

import pytest

from bench.__main__ import parse_args
from bench.report import Report
from bench.scale import POINT_FIGURES, SCALE_TARGETS, ScaleSizes, slowdown

pytestmark = pytest.mark.bench


def test_scale_options_are_exclusive() -> None:
    assert parse_args(["--scale"]).scale
    assert parse_args(["--scale-small"]).scale_small
    with pytest.raises(SystemExit):
        parse_args(["--scale", "--scale-small"])


def test_the_full_size_is_the_issues() -> None:
    full = ScaleSizes()
    assert (full.finished_runs, full.sleeping_runs, full.waiting_runs) == (
        1_000_000,
        100_000,
        10_000,
    )
    assert full.burst_timers == 10_000
    assert 2 * full.replay_steps + 2 >= 10_000  # the replay's history has 10,000 events
    small = ScaleSizes.small()
    assert small.finished_runs < full.finished_runs and small.replay_steps == full.replay_steps


def test_slowdown_is_worse_above_one_for_rates_and_times() -> None:
    assert slowdown("rate", 100.0, 80.0) == pytest.approx(1.25)  # fewer steps/s at size
    assert slowdown("time", 10.0, 12.0) == pytest.approx(1.2)  # slower at size
    assert slowdown("time", 0.0, 0.0) == 1.0
    assert slowdown("rate", 100.0, 0.0) is None
    assert set(POINT_FIGURES.values()) == {"rate", "time"}


def test_scale_targets_say_met_or_not(capsys: pytest.CaptureFixture[str]) -> None:
    report = Report()
    report.figures["scale.slowdown.steps_per_s"] = 1.1
    report.figures["scale.at_size.timer_lateness_p99_s"] = 9.0
    report.targets(SCALE_TARGETS, "scale targets")
    out = capsys.readouterr().out
    assert "target.scale_steps_per_s: 1.10 x  goal <= 1.2  met" in out
    assert "target.timer_burst_p99: 9.00 s  goal <= 2  NOT MET" in out
    assert "target.admin_run_list: not measured" in out
