"""Provider callbacks as hints: verify, remember, and make the named task due now.

A callback is only a hint. Whatever it says (succeeded, failed, a result URL), pollhook
polls the task through the instance's budget and takes the poll's answer as the truth, so a
callback can make a task be polled sooner, never change what pollhook reports of it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.core.config import MAX_DEADLINE_S, ProviderSettings, Settings
from app.core.errors import InvalidJson, NotFound, Unauthorized, ValidationFailed
from app.core.json_body import parse_json_body
from app.core.logging import get_logger
from app.core.metrics import INBOUND_CALLBACKS
from app.inbound.repository import InboundRepository
from app.inbound.schemas import ChallengeEcho, InboundAck
from app.inbound.verification import Refused, secret_problem, verify
from app.providers.base import CallbackSigning, ProviderAdapter
from app.providers.external_ids import InvalidExternalId
from app.providers.registry import adapter_for

# A message is remembered as long as a task it could name may still be tracked: a replay
# after that finds no active task anyway.
REPLAY_WINDOW_S = MAX_DEADLINE_S
MAX_CHALLENGE_CHARS = 1024

log = get_logger(__name__)


@dataclass(frozen=True)
class Callback:
    """One inbound request, as the edge read it."""

    instance: str
    headers: Mapping[str, str]
    token: str | None
    body: bytes
    # The URL's other query parameters (fal's `model`: what its callbacks do not name).
    query: Mapping[str, str]


class InboundService:
    def __init__(self, repository: InboundRepository, settings: Settings) -> None:
        self.repository = repository
        self.settings = settings

    async def receive(self, callback: Callback) -> InboundAck | ChallengeEcho:
        instance = callback.instance
        provider, adapter = self._accepting(instance)
        assert provider.callback_secret is not None
        try:
            key = verify(
                adapter.callbacks,
                provider.callback_secret.get_secret_value(),
                callback.headers,
                callback.token,
                callback.body,
                time.time(),
            )
        except Refused as exc:
            INBOUND_CALLBACKS.labels(instance, "forged").inc()
            log.warning("inbound_refused", instance=instance, reason=str(exc))
            raise Unauthorized(f"callback not verified: {exc}") from None
        body = _json_object(callback.body, instance)
        challenge = body.get("challenge")
        if set(body) == {"challenge"} and isinstance(challenge, str):
            # MiniMax checks a callback URL before it uses it: the challenge, back in time.
            return ChallengeEcho(challenge=challenge[:MAX_CHALLENGE_CHARS])
        if not await self.repository.remember(instance, key):
            INBOUND_CALLBACKS.labels(instance, "replayed").inc()
            return InboundAck(result="replayed", tasks=0)
        await self.repository.forget_older_than(REPLAY_WINDOW_S)
        external_id = _canonical(adapter, adapter.callback_id(body, callback.query))
        hinted = 0
        if external_id is not None:
            hinted = await self.repository.hint(
                instance, external_id, floor_s=provider.min_poll_interval_s
            )
        result = "hinted" if hinted else "unknown_task"
        INBOUND_CALLBACKS.labels(instance, result).inc()
        return InboundAck(result=result, tasks=hinted)

    def _accepting(self, instance: str) -> tuple[ProviderSettings, ProviderAdapter]:
        """The instance and its adapter, if it takes callbacks; NotFound otherwise (the
        same answer whether the instance is missing or takes none: nothing to probe)."""
        provider = self.settings.providers.get(instance)
        adapter = adapter_for(provider.kind) if provider is not None else None
        if (
            provider is None
            or adapter is None
            or provider.callback_secret is None
            or adapter.callbacks is CallbackSigning.NONE
        ):
            INBOUND_CALLBACKS.labels(
                instance if provider is not None else "(unknown)", "refused"
            ).inc()
            raise NotFound(f"no provider instance {instance!r} takes callbacks")
        return provider, adapter


def _canonical(adapter: ProviderAdapter, external_id: str | None) -> str | None:
    """The id as registrations store it, or None for one no registration could hold."""
    if external_id is None:
        return None
    try:
        return adapter.normalize_id(external_id)
    except InvalidExternalId:
        return None


def _json_object(body: bytes, instance: str) -> dict[str, Any]:
    """The body through the API's one JSON parser (app/core/json_body.py), as an object."""
    try:
        value = parse_json_body(body)
    except (InvalidJson, ValidationFailed):
        INBOUND_CALLBACKS.labels(instance, "malformed").inc()
        raise
    if not isinstance(value, dict):
        INBOUND_CALLBACKS.labels(instance, "malformed").inc()
        raise ValidationFailed("the callback's body is not a JSON object")
    return value


def callback_config_problems(settings: Settings) -> list[str]:
    """What in the instances' callback settings cannot work, one line each (the CLI refuses
    to start on any): a secret for a provider that sends no callbacks, or one that is not
    the provider's own signing secret where it signs."""
    problems = []
    for name, provider in settings.providers.items():
        if provider.callback_secret is None:
            continue
        problem = secret_problem(
            adapter_for(provider.kind).callbacks, provider.callback_secret.get_secret_value()
        )
        if problem is not None:
            problems.append(f"providers.{name}.callback_secret: {problem}")
    return problems
