"""Provider kind → its adapter. Adapters hold no per-instance state, so one each suffices."""

from __future__ import annotations

from typing import Annotated, Any, assert_never

from pydantic import Field, TypeAdapter

from app.core.config import ProviderKind
from app.providers.base import ProviderAdapter
from app.providers.jimmy_soundclone import JimmySoundCloneAdapter, JimmySoundCloneResult
from app.providers.minimax_t2a import MinimaxT2AAdapter, MinimaxT2AResult

# A task's result, as the adapter of its provider kind builds it; `kind` tells which.
TaskResult = Annotated[MinimaxT2AResult | JimmySoundCloneResult, Field(discriminator="kind")]

_TASK_RESULT = TypeAdapter[TaskResult](TaskResult)


def read_result(stored: dict[str, Any]) -> MinimaxT2AResult | JimmySoundCloneResult:
    """A stored result as its adapter's model (raises pydantic's ValidationError)."""
    return _TASK_RESULT.validate_python(stored)


_MINIMAX_T2A = MinimaxT2AAdapter()
_JIMMY_SOUNDCLONE = JimmySoundCloneAdapter()


def adapter_for(kind: ProviderKind) -> ProviderAdapter:
    match kind:
        case ProviderKind.MINIMAX_T2A:
            return _MINIMAX_T2A
        case ProviderKind.JIMMY_SOUNDCLONE:
            return _JIMMY_SOUNDCLONE
        case _:
            assert_never(kind)
