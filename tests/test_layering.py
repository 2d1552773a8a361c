"""The layering is a checked rule: `lint-imports` keeps the contracts in pyproject.toml on
this tree, and breaks them on each kind of import the layout forbids (copies of the tree
with one such import added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # Wide enough that no contract's name wraps in the report.
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "400"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract() -> None:
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(
    ("module", "added", "contract"),
    [
        # A domain reaching up into a higher one: the registration planning with the poll
        # loop's internals, an adapter's API with the outcome writer.
        ("app/tasks/service.py", "from app.polling import loop", "Layers"),
        ("app/providers/service.py", "from app.polling import service", "Layers"),
        # The webhook payload built through the API's response model.
        ("app/webhooks/events.py", "from app.tasks import schemas", "Layers"),
        # The shared dependencies hiding a domain's service (the cycle it used to hide).
        ("app/deps.py", "from app.tasks import service", "Layers"),
        # The budget asking the schedule.
        ("app/budget/pacing.py", "from app.schedule import plans", "Layers"),
        # Inside a domain: a repository reaching up to its service.
        ("app/webhooks/repository.py", "from app.webhooks import service", "Inside a domain"),
        # A service that speaks HTTP serving.
        ("app/tasks/service.py", "import fastapi", "nothing knows HTTP serving"),
        # Another domain's repository, not declared as one of its readers.
        (
            "app/tasks/service.py",
            "from app.webhooks import repository",
            "app.webhooks.repository is",
        ),
        # The service importing the sandbox.
        ("app/main.py", "from app.sandbox import state", "never imports the sandbox"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, module: str, added: str, contract: str
) -> None:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{added}  # noqa\n")
    run = lint_imports(tmp_path)
    assert run.returncode == 1, run.stdout
    broken = [line for line in run.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), run.stdout
