"""The dashboard's fixtures: the app with a session key of its own, and (tests/ui/browser)
a live server and a real Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from tests.helpers import api_client


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The suite's settings, with a data_dir of the test's own for the session key file."""
    return settings.model_copy(update={"data_dir": tmp_path / "data"})


@pytest_asyncio.fixture
async def ui(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app that sends no key: what a browser sends, cookies and forms."""
    async with api_client(settings, engine, key=None) as http:
        yield http
