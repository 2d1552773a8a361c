"""Response shapes shared by every route."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str = Field(examples=["external_id: must be a positive 64-bit integer"])
    details: Any = Field(
        default=None,
        description="Structured context; for validation errors a list of {field, message}.",
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can return."""
    descriptions = {
        401: "Missing or unknown API key",
        403: "The link's signature is invalid, or the link has expired",
        404: "No such resource for this tenant",
        408: "The body did not arrive in time (POLLHOOK_REQUEST_READ_TIMEOUT_S); the "
        "connection is closed",
        409: "Conflicts with the resource's current state",
        413: "Request body larger than the limit (64 KiB)",
        415: "The body is not sent as application/json",
        422: "Invalid input; `details` names each field",
        429: "Over this tenant's request rate; retry after `Retry-After` seconds",
        503: "The database is unreachable",
    }
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes
    }
    if 429 in responses:
        responses[429]["headers"] = {
            "Retry-After": {
                "description": "Whole seconds until a request will be admitted (at least 1)",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return responses
