"""The runnable examples of the guides in docs/examples keep running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[2] / "docs" / "examples").glob("*.py"))
EXPECTED = {
    "saga": "'status': 'rolled back'",
    "children": "'failed': [\"nobody:",
    "long_running": "example finished",
    "cancellation": "cancelled",
    "interaction": "stage: checked out",
    "updates": "rejected: apple is already in the cart",
    "deadlines": "WorkflowTimedOut: deadline",
    "transactional": "ledger: [('o-1', 4200)]",
}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert EXPECTED[path.stem] in done.stdout
    assert "parked" not in done.stderr
