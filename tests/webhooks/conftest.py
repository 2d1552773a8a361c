from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.webhooks.delivery import DeliveryWorker
from tests.helpers import ACME_KEY, ADMIN_KEYS, NO_LINKS, OTHER_KEY
from tests.webhooks.receiver import Receiver

FAST_SCHEDULE = [0, 0.2, 0.2, 0.2]


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Loopback opened for the local receiver; a compressed retry schedule."""
    return Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}, {"tenant": "other", "key": OTHER_KEY}],
        admin_keys=ADMIN_KEYS,
        webhook_allow_networks=[ipaddress.ip_network("127.0.0.0/8")],
        webhooks={
            "retry_schedule_s": FAST_SCHEDULE,
            "timeout_s": 1.0,
            "overload_floor_s": 0.3,
            "lease_s": 3,
        },
        engine={"tick_s": 0.05, "shutdown_grace_s": 1},
        log_format="json",
    )


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def deliveries(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Callable[..., Any]]:
    """Start in-process delivery engines (replicas) on the test database."""
    started: list[DeliveryWorker] = []

    def start(owner: str = "replica-a", **overrides: Any) -> DeliveryWorker:
        custom = settings.model_copy(update=overrides) if overrides else settings
        delivery_engine = DeliveryWorker(custom, engine, owner, NO_LINKS)
        delivery_engine.start()
        started.append(delivery_engine)
        return delivery_engine

    yield start
    for delivery_engine in started:
        await delivery_engine.stop()
