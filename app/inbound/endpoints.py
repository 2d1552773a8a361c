from __future__ import annotations

from fastapi import APIRouter, Request

from app.core.schemas import error_responses
from app.deps import SessionDep, SettingsDep
from app.inbound.repository import InboundRepository
from app.inbound.schemas import ChallengeEcho, InboundAck
from app.inbound.service import Callback, InboundService

router = APIRouter(prefix="/inbound", tags=["provider callbacks"])


@router.post(
    "/{instance}",
    summary="A provider's callback that a task ended: a hint to poll it now",
    description="Hand this URL to the provider when you create a task there (Replicate's "
    "`webhook`, fal's `fal_webhook` with `&model=<owner>/<app>`, AssemblyAI's `webhook_url`, "
    "MiniMax's `callback_url`, DashScope's EventBridge HTTP target). "
    "No API key: the callback proves itself with the instance's `callback_secret`, as the "
    "provider's Standard Webhooks signature (Replicate) or as `?token=` (or an "
    "`X-Pollhook-Token` header). A verified callback makes the task it names due now; the "
    "poll that follows, through the instance's budget, decides its state. Forged (401), "
    "replayed and unknown-task callbacks change nothing and are counted in "
    "`pollhook_inbound_callbacks_total`.",
    responses=error_responses(401, 404, 413, 422, 503),
)
async def receive_callback(
    instance: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: str | None = None,
) -> InboundAck | ChallengeEcho:
    query = {k: v for k, v in request.query_params.items() if k != "token"}
    callback = Callback(instance, request.headers, token, await request.body(), query)
    return await InboundService(InboundRepository(session), settings).receive(callback)
