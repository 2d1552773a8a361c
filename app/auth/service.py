"""API keys: random 256-bit tokens, stored as SHA-256 hashes, compared in constant time.

A SHA-256 of a 256-bit random key is as strong as a slow password hash (there is nothing to
brute-force), and it can be looked up through a unique index.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import ApiKeyRepository
from app.core.config import TENANT_PATTERN, StaticAdminKey, StaticApiKey
from app.core.errors import Unauthorized, ValidationFailed
from app.models import Role

KEY_PREFIX = "ph_"
MAX_KEY_LENGTH = 256


@dataclass(frozen=True)
class NewKey:
    tenant: str
    key: str
    key_prefix: str
    role: Role


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def display_prefix(key: str) -> str:
    return key[:10]


@dataclass(frozen=True)
class Caller:
    """Who a request acts as: a tenant, or an operator by name."""

    name: str
    role: Role

    @property
    def tenant(self) -> str | None:
        """The tenant whose objects this caller reaches; None for an operator: every tenant's."""
        return self.name if self.role is Role.TENANT else None

    @property
    def is_operator(self) -> bool:
        return self.role is not Role.TENANT

    @property
    def may_change(self) -> bool:
        return self.role is not Role.OPERATOR_READ

    @property
    def actor(self) -> str:
        """One name across both kinds (tenant names cannot hold ':'): the audit log's `who`
        and the API rate limit's key."""
        return f"{'tenant' if self.role is Role.TENANT else 'operator'}:{self.name}"


class StaticKeys:
    """POLLHOOK_API_KEYS and POLLHOOK_ADMIN_KEYS, checked without a database round trip."""

    def __init__(self, keys: list[StaticApiKey], admin_keys: Sequence[StaticAdminKey] = ()) -> None:
        entries = [(k.key, Caller(k.tenant, Role.TENANT)) for k in keys]
        entries += [
            (k.key, Caller(k.name, Role.OPERATOR_READ if k.read_only else Role.OPERATOR))
            for k in admin_keys
        ]
        self._by_hash = [(hash_key(key.get_secret_value()).encode(), c) for key, c in entries]

    def caller_for(self, presented_hash: str) -> Caller | None:
        # Compare against every entry so the time taken does not depend on which one matched.
        found: Caller | None = None
        candidate = presented_hash.encode()
        for digest, caller in self._by_hash:
            if hmac.compare_digest(digest, candidate):
                found = caller
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


async def authenticate(
    session: AsyncSession, static: StaticKeys, authorization: str | None
) -> Caller:
    return await caller_for_hash(session, static, hash_key(parse_bearer(authorization)))


async def caller_for_hash(session: AsyncSession, static: StaticKeys, digest: str) -> Caller:
    """The caller whose key hashes to `digest`: a static key, else an active stored one."""
    caller = static.caller_for(digest)
    if caller is None:
        found = await ApiKeyRepository(session).owner_for_hash(digest)
        if found is not None:
            caller = Caller(found[0], Role(found[1]))
    if caller is None:
        raise Unauthorized("unknown API key")
    return caller


async def create_key(
    session: AsyncSession, owner: str, name: str | None = None, role: Role = Role.TENANT
) -> NewKey:
    """A new key for a tenant (`owner` is the tenant) or an operator (`owner` is its name)."""
    if not re.match(TENANT_PATTERN, owner):
        raise ValidationFailed.field(
            "tenant" if role is Role.TENANT else "operator",
            "1-64 characters: letters, digits, '_', '.', '-', starting alphanumeric",
        )
    key = generate_key()
    prefix = display_prefix(key)
    await ApiKeyRepository(session).add(
        tenant=owner, name=name, key_prefix=prefix, key_hash=hash_key(key), role=role.value
    )
    return NewKey(tenant=owner, key=key, key_prefix=prefix, role=role)
