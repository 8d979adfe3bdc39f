"""What is stuck: one health report of the journal, read with a fixed number of queries.

`health_report` feeds ``manage.py continuum_health`` and the admin's health page;
`record_sweep` is how each sweep leaves its time and counts for them to read.
"""

from .probe import health_report, record_sweep, wait_kind
from .report import (
    WAITS,
    FailingActivity,
    HealthReport,
    Problem,
    Queues,
    Sweep,
    Thresholds,
    Workers,
    when,
)

__all__ = [
    "WAITS",
    "FailingActivity",
    "HealthReport",
    "Problem",
    "Queues",
    "Sweep",
    "Thresholds",
    "Workers",
    "health_report",
    "record_sweep",
    "wait_kind",
    "when",
]
