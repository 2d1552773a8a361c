"""The audit log on a real Postgres: an entry exactly when the change commits, refusals in a
transaction of their own, newest first with keyset pages and filters."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit.service import AuditLog, Change, permit
from app.auth.service import Caller
from app.core.db import create_sessionmaker
from app.core.errors import Forbidden
from app.models import AuditEntry, Role

OPS = Caller("alice", Role.OPERATOR)
READER = Caller("bob", Role.OPERATOR_READ)
ACME = Caller("acme", Role.TENANT)


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(AuditEntry)) or 0)


async def test_an_entry_exists_only_when_its_change_commits(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)

    async def failing_change() -> None:
        async with sessions.begin() as session:
            await AuditLog(session).record(
                Change(OPS, "delivery.retry"), target="delivery:x", tenant="acme"
            )
            raise RuntimeError("the change failed after the entry was written")

    with pytest.raises(RuntimeError):
        await failing_change()
    assert await _count(engine) == 0
    async with sessions.begin() as session:
        await AuditLog(session).record(
            Change(OPS, "delivery.retry"),
            target="delivery:x",
            tenant="acme",
            details={"url": "http://127.0.0.1:9/h"},
        )
    async with sessions() as session:
        [entry] = (await AuditLog(session).page(limit=10)).items
    assert (entry.actor, entry.role, entry.action, entry.target, entry.tenant, entry.result) == (
        "operator:alice",
        "operator",
        "delivery.retry",
        "delivery:x",
        "acme",
        "ok",
    )
    assert entry.details == {"url": "http://127.0.0.1:9/h"}


async def test_a_read_only_key_is_refused_and_the_refusal_recorded(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    with pytest.raises(Forbidden):
        await permit(sessions, READER, "webhook.rotate_secret", "/v1/webhooks/x/rotate-secret")
    change = await permit(sessions, ACME, "task.cancel", "/v1/tasks/x")
    assert change == Change(ACME, "task.cancel")
    async with sessions() as session:
        [entry] = (await AuditLog(session).page(limit=10)).items
    assert (entry.actor, entry.action, entry.result, entry.target) == (
        "operator:bob",
        "webhook.rotate_secret",
        "denied",
        "/v1/webhooks/x/rotate-secret",
    )


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["t2-4", "t1-3", "t2-2", "t1-1", "ops-0"]),
        ({"tenant": "t1"}, ["t1-3", "t1-1"]),
        ({"actor": "operator:alice"}, ["ops-0"]),
        ({"action": "webhook.update"}, ["t2-4", "t2-2"]),
    ],
)
async def test_pages_newest_first_with_filters(
    engine: AsyncEngine, filters: dict[str, str], expected: list[str]
) -> None:
    sessions = create_sessionmaker(engine)
    writes = [
        (OPS, "provider.pause", None),
        (Caller("t1", Role.TENANT), "delivery.retry", "t1"),
        (Caller("t2", Role.TENANT), "webhook.update", "t2"),
        (Caller("t1", Role.TENANT), "delivery.retry", "t1"),
        (Caller("t2", Role.TENANT), "webhook.update", "t2"),
    ]
    for i, (caller, action, tenant) in enumerate(writes):
        async with sessions.begin() as session:  # a transaction each: `at` grows
            name = caller.name if caller.tenant else "ops"
            await AuditLog(session).record(
                Change(caller, action), target=f"{name}-{i}", tenant=tenant
            )
    seen: list[str] = []
    cursor: str | None = None
    async with sessions() as session:
        while True:
            page = await AuditLog(session).page(limit=2, cursor=cursor, **filters)
            seen += [entry.target for entry in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
    assert seen == expected
