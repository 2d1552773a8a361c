"""Provider kind → its adapter: the one list of the kinds pollhook speaks.

Adding a provider is one adapter module (app/providers/<kind>.py), its line here and in
`TaskResult`, its kind and documented defaults in app/core/config.py, a sandbox fake and
its page in docs/providers.md; the engine reaches every adapter through `ProviderAdapter`.
Adapters hold no per-instance state, so one each suffices.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from app.core.config import ProviderKind
from app.providers.assemblyai import AssemblyAIAdapter, AssemblyAIResult
from app.providers.base import ProviderAdapter
from app.providers.dashscope import DashscopeAdapter, DashscopeResult
from app.providers.elevenlabs_dubbing import ElevenLabsDubbingAdapter, ElevenLabsDubbingResult
from app.providers.fal import FalAdapter, FalResult
from app.providers.jimmy_soundclone import JimmySoundCloneAdapter, JimmySoundCloneResult
from app.providers.minimax_t2a import MinimaxT2AAdapter, MinimaxT2AResult
from app.providers.minimax_video import MinimaxVideoAdapter, MinimaxVideoResult
from app.providers.replicate import ReplicateAdapter, ReplicateResult

# A task's result, as the adapter of its provider kind builds it; `kind` tells which.
TaskResult = Annotated[
    MinimaxT2AResult
    | JimmySoundCloneResult
    | MinimaxVideoResult
    | ReplicateResult
    | DashscopeResult
    | AssemblyAIResult
    | FalResult
    | ElevenLabsDubbingResult,
    Field(discriminator="kind"),
]

_TASK_RESULT = TypeAdapter[TaskResult](TaskResult)

_ADAPTERS: dict[ProviderKind, ProviderAdapter] = {
    adapter.kind: adapter
    for adapter in (
        MinimaxT2AAdapter(),
        JimmySoundCloneAdapter(),
        MinimaxVideoAdapter(),
        ReplicateAdapter(),
        DashscopeAdapter(),
        AssemblyAIAdapter(),
        FalAdapter(),
        ElevenLabsDubbingAdapter(),
    )
}


def read_result(stored: dict[str, Any]) -> TaskResult:
    """A stored result as its adapter's model (raises pydantic's ValidationError)."""
    return _TASK_RESULT.validate_python(stored)


def adapter_for(kind: ProviderKind) -> ProviderAdapter:
    return _ADAPTERS[kind]


def normalize_external_id(kind: ProviderKind, raw: object) -> str:
    """`raw` as the canonical id of a `kind` task; raises InvalidExternalId with the reason."""
    return adapter_for(kind).normalize_id(raw)
