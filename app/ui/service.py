"""Who is signed in to the dashboard, and the key its session cookies are signed with."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import service as auth
from app.auth.service import MAX_KEY_LENGTH, Caller, StaticKeys, hash_key
from app.core.config import Settings
from app.core.errors import Unauthorized
from app.core.keyfile import load_or_create_key

# The random session key's file in data_dir, when ui.session_secret is unset.
SESSION_KEY_FILE = "ui-session.key"


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
    """The caller of a key by its hash, looked up as the API authenticates a bearer key;
    None for an unknown or revoked key."""
    try:
        return await auth.caller_for_hash(session, static, key_hash)
    except Unauthorized:
        return None
