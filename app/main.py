"""Composition root: builds the FastAPI app from Settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app import __version__
from app.api import root_router
from app.auth.service import StaticKeys
from app.blobs.endpoints import archive_files_router
from app.blobs.local import LocalBlobStore
from app.blobs.stores import open_store
from app.blobs.views import ArchiveLinks
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.core.docs import serve_docs_offline
from app.core.error_handlers import install_error_handlers
from app.core.middleware import BodyLimitMiddleware, RequestLogMiddleware
from app.core.netguard import SsrfGuard
from app.core.rate_limit import TenantRateLimiter
from app.core.routes import RouteIndex
from app.core.schemas import ErrorResponse
from app.schedule.forecasts import Forecasts
from app.state import AppState
from app.ui.endpoints import serve_dashboard
from app.webhooks.endpoints import describe_events

DESCRIPTION = """
pollhook tracks long-running tasks at AI-audio providers (MiniMax T2A async, Jimmy AI
SoundClone). Register an upstream task ID; pollhook polls the provider within its rate budget
and delivers signed webhooks when the task finishes.

Every `/v1` route needs `Authorization: Bearer <API key>`. Every error has the shape
`{"error": {"code", "message", "details"}}`.
"""


def create_app(settings: Settings, *, engine: AsyncEngine | None = None) -> FastAPI:
    owns_engine = engine is None
    if engine is None:
        if settings.database_url is None:
            raise ValueError("create_app needs a database URL or an engine")
        engine = create_engine(
            settings.database_url.get_secret_value(), pool_size=settings.db_pool_size
        )
    store = open_store(settings)
    state = AppState(
        settings=settings,
        engine=engine,
        sessions=create_sessionmaker(engine),
        statement_sessions=create_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT")
        ),
        static_keys=StaticKeys(settings.api_keys, settings.admin_keys),
        guard=SsrfGuard(settings.webhook_allow_networks),
        rate_limiter=TenantRateLimiter(
            settings.api_rate_limit_per_s, settings.api_rate_limit_burst
        ),
        forecasts=Forecasts(ttl_s=settings.engine.model_refresh_s),
        blobs=store,
        archive_links=ArchiveLinks(store, link_ttl_s=settings.archive.link_ttl_s),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owns_engine:
                await state.engine.dispose()

    app = PollhookAPI(
        title="pollhook",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # The task object is both a response and a webhook body (a request, to FastAPI):
        # one schema for both keeps it one `TaskRead` in the document.
        separate_input_output_schemas=False,
    )
    app.state.pollhook = state
    serve_docs_offline(app)
    app.include_router(root_router)
    if isinstance(state.blobs, LocalBlobStore):
        # A file:// archive's links point at pollhook itself.
        app.include_router(archive_files_router(state.blobs))
    serve_dashboard(app)
    describe_events(app.webhooks)
    install_error_handlers(app)
    app.state.routes = RouteIndex(app.openapi(), list(app.routes))
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.request_read_timeout_s,
        max_bytes_by_path={app.url_path_for("register_tasks"): settings.max_batch_body_bytes},
    )
    app.add_middleware(RequestLogMiddleware)
    return app


class PollhookAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's document plus bearer auth on the /v1 routes, without FastAPI's default
        422 schemas (they describe a shape pollhook never sends)."""
        schema = super().openapi()
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `pollhook keys create` or POLLHOOK_API_KEYS.",
        }
        schemas = components.setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas.setdefault(
            "ErrorResponse",
            ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}"),
        )
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if path.startswith("/v1/"):
                    # A route that declares its own (the archive's signed links) keeps it.
                    operation.setdefault("security", [{"bearerAuth": []}])
                for response in operation.get("responses", {}).values():
                    content = response.get("content", {}).get("application/json", {})
                    if content.get("schema", {}).get("$ref", "").endswith("HTTPValidationError"):
                        content["schema"] = {"$ref": "#/components/schemas/ErrorResponse"}
                        response["description"] = "Invalid input; `details` names each field"
        # A consumer's endpoint answers pollhook, which validates nothing of the answer.
        for operations in schema.get("webhooks", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        return schema
