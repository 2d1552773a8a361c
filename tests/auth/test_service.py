from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.main import create_app
from tests.helpers import ACME_KEY
from tests.tasks.test_endpoints import assert_error


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
            assert static.tenant_for(hash_key(presented)) == tenant
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


class TestErrorShape:
    async def test_unknown_route(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get("/v1/nothing-here"), 404, "not_found")

    async def test_wrong_method(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.put("/v1/tasks"), 405, "method_not_allowed")

    async def test_unexpected_error_hides_internals(
        self, settings: Settings, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
    ) -> None:
        app = create_app(settings, engine=engine)
        boom = APIRouter()

        @boom.get("/boom")
        async def explode() -> None:
            raise RuntimeError(f"secret detail {ACME_KEY}")

        app.include_router(boom)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://t",
        ) as http:
            response = await http.get("/boom")
        error = assert_error(response, 500, "internal_error")
        assert error == {"code": "internal_error", "message": "internal server error"}
        assert "secret detail" not in response.text
        assert "Traceback" not in response.text

    async def test_database_down_is_503(self, settings: Settings) -> None:
        from app.core.db import create_engine

        dead = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
        app = create_app(settings, engine=dead)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://t",
            headers={"Authorization": f"Bearer {ACME_KEY}"},
        ) as http:
            write = await http.post("/v1/tasks", json={"provider": "minimax", "external_id": 1})
            ready = await http.get("/readyz")
            alive = await http.get("/healthz")
        assert_error(write, 503, "service_unavailable")
        assert write.headers["retry-after"] == "5"
        assert_error(ready, 503, "service_unavailable")
        assert alive.status_code == 200
        await dead.dispose()


class TestFrameworkErrors:
    async def test_405_lists_every_method_of_the_path(self, client: httpx.AsyncClient) -> None:
        for path, methods in (
            ("/v1/tasks", {"GET", "POST"}),
            ("/v1/tasks/00000000-0000-0000-0000-000000000000", {"GET", "DELETE"}),
            ("/v1/webhooks/00000000-0000-0000-0000-000000000000", {"GET", "PATCH", "DELETE"}),
        ):
            response = await client.options(path)
            assert_error(response, 405, "method_not_allowed")
            assert set(response.headers["allow"].split(", ")) >= methods

    async def test_undecodable_body_is_invalid_json(self, client: httpx.AsyncClient) -> None:
        response = await client.patch(
            "/v1/webhooks/00000000-0000-0000-0000-000000000000",
            content=b"\x17\xc3.U\xa3Y",
            headers={"content-type": "application/json"},
        )
        assert_error(response, 422, "invalid_json")
