"""The one error base of pollhook.

ServiceError(message, details) carries an HTTP status and a stable machine code; the single
handler in `error_handlers` renders every one as `{"error": {"code", "message", "details"}}`.

    ServiceError                       500 internal_error
    ├── Unauthorized                   401 unauthorized
    ├── Forbidden                      403 forbidden
    ├── NotFound                       404 not_found
    ├── RequestTimeout                 408 request_timeout
    ├── Conflict                       409 conflict
    ├── PayloadTooLarge                413 payload_too_large
    ├── ValidationFailed               422 validation_error   (details: [{field, message}])
    ├── InvalidJson                    422 invalid_json       (details: [{field, message}])
    ├── TooManyRequests                429 rate_limited       (details: {retry_after_s})
    └── ServiceUnavailable             503 service_unavailable

Code below the endpoints raises these, never FastAPI's HTTPException.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class RequestTimeout(ServiceError):
    status_code = 408
    code = "request_timeout"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class ValidationFailed(ServiceError):
    status_code = 422
    code = "validation_error"

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        return cls(f"{field}: {message}", details=[{"field": field, "message": message}])


class InvalidJson(ServiceError):
    status_code = 422
    code = "invalid_json"


class TooManyRequests(ServiceError):
    """Sent with `Retry-After: <retry_after_s>`."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "service_unavailable"
