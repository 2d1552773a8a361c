"""API keys (app/auth/service.py): who is let in, how database and static keys are stored and
compared, revocation."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import ACME_KEY, assert_error


class TestAuthentication:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer "},
            {"Authorization": f"Basic {ACME_KEY}"},
            {"Authorization": "Bearer not-a-known-key"},
            {"Authorization": "Bearer " + "k" * 5000},
            {"Authorization": f"Bearer {ACME_KEY}x"},
        ],
    )
    async def test_rejected(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        client.headers.pop("Authorization")
        for method, path in (("GET", "/v1/tasks"), ("POST", "/v1/tasks")):
            response = await client.request(method, path, headers=headers, json={})
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"

    async def test_database_key(self, client: httpx.AsyncClient, engine: AsyncEngine) -> None:
        from app.auth.service import create_key
        from app.core.db import create_sessionmaker, transaction

        async with transaction(create_sessionmaker(engine)) as session:
            new = await create_key(session, "dbtenant", "ci")
        assert new.key.startswith("ph_")
        assert len(new.key) > 40
        response = await client.get("/v1/tasks", headers={"Authorization": f"Bearer {new.key}"})
        assert response.status_code == 200

    async def test_key_is_stored_hashed(self, engine: AsyncEngine) -> None:
        import hashlib

        from sqlalchemy import text

        from app.auth.service import create_key, hash_key
        from app.core.db import create_sessionmaker, transaction

        async with transaction(create_sessionmaker(engine)) as session:
            new = await create_key(session, "t1")
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT key_hash, key_prefix FROM api_keys"))).one()
            dump = str((await conn.execute(text("SELECT * FROM api_keys"))).all())
        assert row.key_hash == hash_key(new.key)
        assert row.key_hash == hashlib.sha256(new.key.encode()).hexdigest()
        assert new.key not in dump

    def test_static_keys_compare_every_entry_in_constant_time(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Presented keys are hashed first, then compared with hmac.compare_digest against
        every configured key, so neither the key's length nor which entry matched shows in
        the time taken. (Database keys are found by their hash through an index: the timing
        of that lookup can only tell an attacker about SHA-256 outputs.)"""
        import hashlib
        import hmac

        from app.auth.service import StaticKeys, hash_key
        from app.core.config import StaticApiKey

        keys = [StaticApiKey(tenant=f"t{n}", key=f"static-key-{n}-0123456789") for n in range(3)]
        static = StaticKeys(keys)
        assert not any(k.key.get_secret_value() in repr(vars(static)) for k in keys)
        compared: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            compared.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        for presented, tenant in [
            ("static-key-0-0123456789", "t0"),
            ("static-key-2-0123456789", "t2"),
            ("x" * 200, None),
        ]:
            compared.clear()
            found = static.caller_for(hash_key(presented))
            assert (found.tenant if found else None) == tenant
            assert len(compared) == 3  # every entry, whether or where one matched
            digest = hashlib.sha256(presented.encode()).hexdigest().encode()
            assert all(b == digest and len(a) == len(b) == 64 for a, b in compared)

    async def test_revoked_key(self, client: httpx.AsyncClient, engine: AsyncEngine) -> None:
        from app.auth.repository import ApiKeyRepository
        from app.auth.service import create_key
        from app.core.db import create_sessionmaker, transaction

        sessions = create_sessionmaker(engine)
        async with transaction(sessions) as session:
            new = await create_key(session, "t2")
        async with transaction(sessions) as session:
            assert await ApiKeyRepository(session).revoke(new.key_prefix) == 1
        response = await client.get("/v1/tasks", headers={"Authorization": f"Bearer {new.key}"})
        assert_error(response, 401, "unauthorized")

    async def test_invalid_tenant_name(self, engine: AsyncEngine) -> None:
        from app.auth.service import create_key
        from app.core.db import create_sessionmaker, transaction
        from app.core.errors import ValidationFailed

        with pytest.raises(ValidationFailed):
            async with transaction(create_sessionmaker(engine)) as session:
                await create_key(session, "bad tenant!")

    async def test_health_needs_no_key(self, client: httpx.AsyncClient) -> None:
        client.headers.pop("Authorization")
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
