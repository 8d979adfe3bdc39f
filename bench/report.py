"""The benchmark's output: `name: value unit` lines, ratios, and the targets met or not."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile, interpolated between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    numerator: str
    denominator: str | None  # None: the numerator's value itself is compared
    goal: float
    at_most: bool  # True: met when value <= goal; False: met when value >= goal
    what: str
    unit: str = ""  # printed after the value; default: "x" for a ratio, else "per step"


# The targets, each computed from figures measured in the same run.
TARGETS = [
    Target(
        "cpu_per_run_vs_dbos",
        "cpu.continuum.total_ms_per_run",
        "cpu.dbos.total_ms_per_run",
        0.5,
        True,
        "headline: CPU per run (every process, Postgres included) <= 0.5x DBOS's",
    ),
    Target(
        "throughput_vs_dbos",
        "throughput.continuum.steps_per_s",
        "throughput.dbos.steps_per_s",
        2.0,
        False,
        "continuum steps/s >= 2x DBOS's",
    ),
    Target(
        "throughput_vs_raw_db",
        "throughput.continuum.steps_per_s",
        "raw.psycopg.tx_per_s",
        0.5,
        False,
        "stretch: continuum steps/s >= 50% of the raw database loop",
    ),
    Target(
        "commits_per_step",
        "dbcost.continuum.commits_per_step",
        None,
        2.0,
        True,
        "<= 2 commits per workflow step",
    ),
    Target(
        "history_1000_vs_10",
        "history.continuum.long.ms_per_step",
        "history.continuum.short.ms_per_step",
        1.5,
        True,
        "a long workflow's step costs <= 1.5x a 10-step one's",
    ),
    Target(
        "latency_p50_vs_chain",
        "latency.continuum.p50_ms",
        "latency.celery_chain.p50_ms",
        1.5,
        True,
        "single-run latency p50 <= 1.5x the Celery chain's",
    ),
]


@dataclass
class Report:
    """Prints each figure as soon as it is measured, and keeps it for ratios and targets."""

    figures: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def line(self, text: str) -> None:
        print(text, flush=True)
        sys.stdout.flush()

    def note(self, text: str) -> None:
        self.line(f"# {text}")

    def figure(
        self, name: str, value: float, unit: str, repeats: Sequence[float] | None = None
    ) -> float:
        self.figures[name] = value
        detail = ""
        if repeats is not None and len(repeats) > 1:
            detail = "  (repeats: " + ", ".join(_fmt(v) for v in repeats) + ")"
        self.line(f"{name}: {_fmt(value)} {unit}{detail}")
        return value

    def count(self, name: str, value: int, unit: str = "") -> int:
        """A figure that is a count: printed as an integer."""
        self.figures[name] = value
        self.line(f"{name}: {value} {unit}".rstrip())
        return value

    def median_figure(self, name: str, values: Sequence[float], unit: str) -> float:
        """The median of the repeats, printed with every repeat."""
        return self.figure(name, median(values), unit, values)

    def skip(self, name: str, reason: str) -> None:
        self.unavailable[name] = reason
        self.line(f"{name}: unavailable ({reason})")

    def ratio(self, name: str, numerator: str, denominator: str) -> float | None:
        """Print ``ratio.<name>`` when both figures were measured in this run."""
        if numerator not in self.figures or denominator not in self.figures:
            return None
        if self.figures[denominator] == 0:
            return None
        value = self.figures[numerator] / self.figures[denominator]
        return self.figure(f"ratio.{name}", value, "x")

    def targets(
        self, targets: Sequence[Target] = TARGETS, title: str = "targets (measured in this run)"
    ) -> None:
        self.line("")
        self.note(title)
        for target in targets:
            value = self._target_value(target)
            sign = "<=" if target.at_most else ">="
            if value is None:
                self.line(f"target.{target.name}: not measured  goal {sign} {target.goal:g}")
                continue
            met = value <= target.goal if target.at_most else value >= target.goal
            verdict = "met" if met else "NOT MET"
            unit = target.unit or ("x" if target.denominator else "per step")
            self.line(
                f"target.{target.name}: {_fmt(value)} {unit}  goal {sign} {target.goal:g}  "
                f"{verdict}  ({target.what})"
            )

    def _target_value(self, target: Target) -> float | None:
        top = self.figures.get(target.numerator)
        if top is None:
            return None
        if target.denominator is None:
            return top
        bottom = self.figures.get(target.denominator)
        return top / bottom if bottom else None


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
