"""Who is signed in to the dashboard, and the key its session cookies are signed with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import ApiKeyRepository
from app.auth.service import MAX_KEY_LENGTH, StaticKeys, hash_key
from app.core.config import Settings
from app.core.keyfile import load_or_create_key

# The random session key's file in data_dir, when ui.session_secret is unset.
SESSION_KEY_FILE = "ui-session.key"

Role = Literal["tenant", "operator", "operator_read"]


@dataclass(frozen=True)
class Caller:
    """Whom a key belongs to: a tenant, or an operator (tenant None: every tenant's data)
    who may or may not change anything."""

    name: str
    role: Role
    tenant: str | None
    may_change: bool


def session_secret(settings: Settings) -> bytes:
    """The key that signs session cookies: ui.session_secret, or else a random key kept in
    data_dir, shared by every process started on it."""
    if settings.ui.session_secret is not None:
        return settings.ui.session_secret.get_secret_value().encode()
    return load_or_create_key(settings.data_dir / SESSION_KEY_FILE)


def key_hash_of(key: str) -> str | None:
    """The hash a key is known by, as `authenticate` takes it from a bearer header; None for
    what can be no key."""
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    return hash_key(key)


async def caller_for_hash(
    session: AsyncSession, static: StaticKeys, key_hash: str
) -> Caller | None:
    """The caller of a key by its hash, looked up as `app.auth.service.authenticate` does
    (static keys, then the unrevoked keys of the api_keys table); None for an unknown or
    revoked key."""
    tenant = static.tenant_for(key_hash)
    if tenant is None:
        tenant = await ApiKeyRepository(session).tenant_for_hash(key_hash)
    if tenant is None:
        return None
    return Caller(name=tenant, role="tenant", tenant=tenant, may_change=True)
