from __future__ import annotations

import pytest

from app.core.config import Settings
from app.core.db import create_engine
from tests.helpers import api_client
from tests.netproxy import proxy_to, through


# The schema must exist for /v1/tasks to answer 200: `engine` migrates the database.
@pytest.mark.usefixtures("engine")
async def test_readyz_follows_the_database(settings: Settings, database_url: str) -> None:
    """/readyz is 503 while the database is unreachable and 200 again once it is back,
    and requests recover without a restart (stale pooled connections are replaced)."""
    proxy = proxy_to(database_url)
    await proxy.start()
    proxied = through(database_url, proxy)
    engine = create_engine(proxied.render_as_string(hide_password=False))
    async with api_client(settings, engine) as http:
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/v1/tasks")).status_code == 200

        await proxy.cut()
        down = await http.get("/readyz")
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "service_unavailable"
        assert (await http.get("/v1/tasks")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200

        await proxy.start()
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/v1/tasks")).status_code == 200
    await engine.dispose()
    await proxy.cut()
