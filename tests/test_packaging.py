"""pollhook as pip installs it: a wheel that carries its migrations, built without a warning.

The builds run the setuptools backend pinned in pyproject.toml (installed by the dev extras)
on a copy of the checkout, with every Python warning turned into an error; the installed
wheel gets its dependencies from this environment, so nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from app.core import migrate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files git would commit, copied: a build writes into its source tree."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    copy = tmp_path_factory.mktemp("source")
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    return copy


def build(hook: str, source: Path, out: Path) -> Path:
    """Run a PEP 517/660 hook of the build backend with warnings as errors."""
    out.mkdir(exist_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
        # Only the build's own warnings count: no switch from the caller's environment.
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "warning" not in result.stderr.lower(), result.stderr
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("build_wheel", source, tmp_path_factory.mktemp("dist"))


def test_editable_build_has_no_warning(source: Path, tmp_path: Path) -> None:
    assert build("build_editable", source, tmp_path).name.endswith(".whl")


def test_installed_wheel_migrates_from_any_directory(
    wheel: Path, pg_url_unmigrated: str, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies come from this environment, after the new venv's own packages (a
    # path line in a .pth file; this environment's editable pollhook hook is not run).
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install"),
            *("--no-deps", "--no-index", "--disable-pip-version-check", "--quiet", str(wheel)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLHOOK_", "PYTHON"))}
    located = subprocess.run(
        [python, "-c", "import app; print(app.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert located.startswith(site), located  # the wheel's copy, not the checkout

    env |= {"POLLHOOK_DATABASE_URL": pg_url_unmigrated, "POLLHOOK_LOG_FORMAT": "json"}
    migrated = subprocess.run(
        [venv / "bin" / "pollhook", "migrate"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert migrated.stdout.strip() == f"database schema at {head}"


def test_the_wheel_carries_the_dashboards_files(wheel: Path) -> None:
    """Every file the dashboard serves or renders, from the checkout's app/ui."""
    ui = ROOT / "app" / "ui"
    wanted = {
        f"app/ui/{path.relative_to(ui).as_posix()}"
        for folder in ("templates", "static")
        for path in (ui / folder).rglob("*")
        if path.is_file()
    }
    assert wanted
    with zipfile.ZipFile(wheel) as archive:
        assert wanted <= set(archive.namelist())
