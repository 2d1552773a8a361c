"""What the sandbox's MiniMax fakes share (T2A async in app.py, video generation in
fakes/minimax_video.py): MiniMax's `base_resp` error answer and its refusal of a key.

One host and one key serve both APIs at MiniMax, so they refuse a key the same way.
"""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse

from app.sandbox.gate import Json
from app.sandbox.state import KeyProblem

MINIMAX_LOGIN_FAIL = (
    "login fail: Please carry the API secret key in the 'Authorization' field of the request header"
)


def minimax_error(
    code: int, message: str, *, status: int = 200, task_id: int | str | None = None
) -> Response:
    body: Json = {} if task_id is None else {"task_id": task_id}
    body["base_resp"] = {"status_code": code, "status_msg": message}
    return JSONResponse(body, status_code=status)


def minimax_refusal(problem: KeyProblem) -> Response:
    """A key from the other region gives 2049 with HTTP 401; a missing or wrong one 1004."""
    if problem == "bad_region":
        return minimax_error(2049, "invalid api key", status=401)
    return minimax_error(1004, MINIMAX_LOGIN_FAIL)


def minimax_rate_limited() -> Response:
    # MiniMax keeps HTTP 200 and says 1002 in base_resp.
    return minimax_error(1002, "rate limit exceeded")
