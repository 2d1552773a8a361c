"""Build hook: the wheel carries the top-level migrations/ as package data, app/migrations.

The folder stays where Alembic's tooling expects it in a checkout (alembic.ini), and an
installed pollhook finds it through its own package (app.core.migrate), from any directory.
Everything else is declared in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path("migrations")


class BuildPyWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads migrations/ in place
        target = Path(self.build_lib, "app", "migrations")
        for path in sorted(SOURCE.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                destination = target / path.relative_to(SOURCE)
                self.mkpath(str(destination.parent))
                self.copy_file(str(path), str(destination))


setup(cmdclass={"build_py": BuildPyWithMigrations})
