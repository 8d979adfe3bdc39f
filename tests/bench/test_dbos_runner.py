"""The benchmark's DBOS runner reads CPU time exactly around the workload's throughput
repeats (marked on its stdout), so DBOS's start-up and latency runs stay out of it."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from bench.peers.dbos_runner import _drive

# Burns CPU before, between and after its marks, as DBOS's launch, throughput repeats and
# latency runs do; waits for a line on stdin at each mark, as the real workload does.
WORKLOAD = """
import sys, time

def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

def mark(moment):
    print(moment, flush=True)
    sys.stdin.readline()

burn({before})
mark("throughput begins")
burn({during})
mark("throughput ends")
burn({after})
print('{{"elapsed": [1.0]}}')
"""


def _run(tmp_path: Path, before: float, during: float, after: float) -> tuple[int, str, dict]:
    script = tmp_path / "workload.py"
    script.write_text(textwrap.dedent(WORKLOAD.format(before=before, during=during, after=after)))
    with (tmp_path / "workload.log").open("ab") as err:
        return _drive([sys.executable, str(script)], err)


def test_cpu_is_read_between_the_marks_only(tmp_path: Path) -> None:
    returncode, output, cpu = _run(tmp_path, before=0.6, during=0.3, after=0.6)

    assert returncode == 0
    assert output == '{"elapsed": [1.0]}'  # the last line: the workload's result
    # The workload's own process is the group "peer"; what it burned outside the marks
    # (1.2 s) is not counted, what it burned between them (0.3 s) is, to a clock tick.
    assert 0.25 <= cpu["peer"] <= 0.5


def test_a_failing_workload_reports_its_exit_status(tmp_path: Path) -> None:
    script = tmp_path / "workload.py"
    script.write_text("import sys\nprint('throughput begins', flush=True)\nsys.exit(3)\n")
    with (tmp_path / "workload.log").open("ab") as err:
        returncode, _, cpu = _drive([sys.executable, str(script)], err)

    assert returncode == 3
    assert cpu == {}  # never reached the end mark: no figure rather than a wrong one
