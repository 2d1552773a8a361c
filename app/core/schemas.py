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
        404: "No such resource for this tenant",
        409: "Conflicts with the resource's current state",
        413: "Request body larger than the limit (64 KiB)",
        415: "The body is not sent as application/json",
        422: "Invalid input; `details` names each field",
        429: "Too many requests",
        503: "The database is unreachable",
    }
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}
