from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.service import StaticKeys
from app.blobs.base import BlobStore
from app.blobs.views import ArchiveLinks
from app.core.config import Settings
from app.core.netguard import SsrfGuard
from app.core.rate_limit import TenantRateLimiter
from app.schedule.forecasts import Forecasts


@dataclass
class AppState:
    """What the process shares: built once in the composition root (app.main)."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # Autocommit: each statement is its own transaction (app.deps.get_statement_session).
    statement_sessions: async_sessionmaker[AsyncSession]
    static_keys: StaticKeys
    # Checks every URL a client gives (webhook endpoints, callback_url) before it is stored.
    guard: SsrfGuard
    rate_limiter: TenantRateLimiter
    # The learned completion models, for planning a task's first poll at registration.
    forecasts: Forecasts
    # The archive's object store (app/blobs); None while the archive is off.
    blobs: BlobStore | None
    # Shows a task's archived files with links minted as it is shown.
    archive_links: ArchiveLinks
