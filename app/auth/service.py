"""API keys: random 256-bit tokens, stored as SHA-256 hashes, compared in constant time.

A SHA-256 of a 256-bit random key is as strong as a slow password hash (there is nothing to
brute-force), and it can be looked up through a unique index.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import ApiKeyRepository
from app.core.config import TENANT_PATTERN, StaticApiKey
from app.core.errors import Unauthorized, ValidationFailed

KEY_PREFIX = "ph_"
MAX_KEY_LENGTH = 256


@dataclass(frozen=True)
class NewKey:
    tenant: str
    key: str
    key_prefix: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def display_prefix(key: str) -> str:
    return key[:10]


class StaticKeys:
    """POLLHOOK_API_KEYS, checked without a database round trip."""

    def __init__(self, keys: list[StaticApiKey]) -> None:
        self._by_hash = [(hash_key(k.key.get_secret_value()).encode(), k.tenant) for k in keys]

    def tenant_for(self, presented_hash: str) -> str | None:
        # Compare against every entry so the time taken does not depend on which one matched.
        found: str | None = None
        candidate = presented_hash.encode()
        for digest, tenant in self._by_hash:
            if hmac.compare_digest(digest, candidate):
                found = tenant
        return found

    def __len__(self) -> int:
        return len(self._by_hash)


def parse_bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing API key: send Authorization: Bearer <key>")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("malformed Authorization header: expected Bearer <key>")
    if len(token) > MAX_KEY_LENGTH:
        raise Unauthorized("unknown API key")
    return token


async def authenticate(session: AsyncSession, static: StaticKeys, authorization: str | None) -> str:
    key = parse_bearer(authorization)
    digest = hash_key(key)
    tenant = static.tenant_for(digest)
    if tenant is None:
        tenant = await ApiKeyRepository(session).tenant_for_hash(digest)
    if tenant is None:
        raise Unauthorized("unknown API key")
    return tenant


async def create_key(session: AsyncSession, tenant: str, name: str | None = None) -> NewKey:
    if not re.match(TENANT_PATTERN, tenant):
        raise ValidationFailed.field(
            "tenant", "1-64 characters: letters, digits, '_', '.', '-', starting alphanumeric"
        )
    key = generate_key()
    prefix = display_prefix(key)
    await ApiKeyRepository(session).add(
        tenant=tenant, name=name, key_prefix=prefix, key_hash=hash_key(key)
    )
    return NewKey(tenant=tenant, key=key, key_prefix=prefix)
