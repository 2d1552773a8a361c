"""Every benchmark starts as docs/benchmarks.md runs it: `python -m bench.NAME`, here with
--help (it parses its options and imports everything it runs, pgqueuer aside, which
bench.engine_throughput imports only for its baseline phase)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(
    p.stem for p in BENCH.glob("*.py") if p.stem not in {"__init__", "_support", "receiver"}
)


def test_the_documented_benchmarks_are_all_here() -> None:
    documented = (BENCH.parent / "docs" / "benchmarks.md").read_text()
    assert [m for m in MODULES if f"bench.{m}" not in documented] == []


@pytest.mark.parametrize("module", MODULES)
def test_a_benchmark_starts(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--help"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
