"""Every failure leaves as `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import ServiceError, TooManyRequests
from app.core.logging import get_logger
from app.core.routes import RouteIndex

log = get_logger("pollhook.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def _field_name(loc: tuple[int | str, ...]) -> str:
    # ("body", "metadata", "x") -> "metadata.x"; ("query", "limit") -> "limit"; ("body",) -> "body"
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return service_error_response(exc)


def service_error_response(exc: ServiceError) -> JSONResponse:
    """The response for a ServiceError: from the exception handler, and from the body
    middleware, which answers before the app (and its handlers) sees the request."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    if exc.status_code == 503:
        headers = {"Retry-After": "5"}
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details), status_code=exc.status_code, headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "")
    if (
        content_type
        and "json" not in content_type
        and any(tuple(err.get("loc", ())) == ("body",) for err in exc.errors())
    ):
        return JSONResponse(
            error_body("unsupported_media_type", "send the body as Content-Type: application/json"),
            status_code=415,
        )
    details = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return JSONResponse(
                error_body(
                    "invalid_json",
                    "the request body is not valid JSON",
                    [{"field": "body", "message": str(err.get("ctx", {}).get("error", "invalid"))}],
                ),
                status_code=422,
            )
        loc = tuple(err.get("loc", ()))
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        details.append(
            {"field": _field_name(loc), "location": str(loc[0]) if loc else "", "message": message}
        )
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return JSONResponse(
        error_body("validation_error", summary or "invalid request", details), status_code=422
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # The framework's only 400: a body it could not even decode. The contract says
        # malformed bodies are a 422 like malformed JSON.
        return JSONResponse(
            error_body(
                "invalid_json",
                "the request body is not valid JSON",
                [{"field": "body", "message": str(exc.detail)}],
            ),
            status_code=422,
        )
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method served at this path (Starlette names only the first matching route's)."""
    index: RouteIndex | None = getattr(request.app.state, "routes", None)
    match = index.match(request.url.path) if index is not None else None
    return list(match.methods) if match is not None else []


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database_unavailable", error=type(exc).__name__)
    return JSONResponse(
        error_body("service_unavailable", "the database is unavailable; retry shortly"),
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled_error",
        method=request.method,
        path=request.url.path,
        error=type(exc).__name__,
        exc_info=exc,
    )
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


# SQLSTATE classes that mean the server cannot serve anyone right now: 08 (connection
# exceptions) and 57P (admin/crash shutdown, "the database system is starting up"). asyncpg
# raises these as plain PostgresErrors, which SQLAlchemy wraps as a bare DBAPIError; while a
# restarted server recovers, every new connection gets 57P03 and must be a 503, not a 500
# (found by bench/soak.py restarting Postgres under load).
_UNAVAILABLE_SQLSTATES = ("08", "57P")


def _is_connection_error(exc: DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
        return True
    cause: BaseException | None = exc.orig
    for _ in range(5):  # the driver's error is the adapted error's cause
        if cause is None:
            break
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        cause = cause.__cause__
    return False


async def _dbapi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if _is_connection_error(exc):
        return await _database_unavailable(request, exc)
    return await _unexpected(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _dbapi_error)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(ConnectionError, _database_unavailable)
    app.add_exception_handler(OSError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
