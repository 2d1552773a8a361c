"""The chaos soak's short version (`python -m bench.soak --short`) as part of the suite.

Real processes: a throwaway embedded Postgres (restarted once, immediate mode), `pollhook
api` (SIGKILLed and restarted), two `pollhook worker`s (SIGKILLed and replaced twice), the
sandbox with random faults of every kind, and a webhook consumer that fails, hangs, throttles
and answers 410 at random. The soak itself checks invariants 1-4 of docs/reliability.md from the
database, the consumer's records and the sandbox's counts; this test asserts it found no
violation. It runs in its own process so its servers, signals and event loop stay apart from
the suite's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_short_soak_finds_no_violation(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--short", "--json", str(report_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = (run.stdout + run.stderr)[-8000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())
    assert report["violations"] == [], output
    assert run.returncode == 0, output
    # The chaos happened and the checks ran: not a vacuous pass.
    assert report["kills"] >= 2, report["actions"]
    assert report["postgres_restarts"] >= 1, report["actions"]
    assert report["api_restarts"] >= 1, report["actions"]
    assert report["tasks"]["registered"] > 0
    assert report["faults"]["injected_total"] > 0
    assert report["deliveries"]["expected_targets"] > 0
    assert report["drain_s"] is not None, output
