from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

InboundResult = Literal["hinted", "unknown_task", "replayed"]


class InboundAck(BaseModel):
    """What became of a verified callback. Its content is never taken as the task's state:
    a hinted task is polled at once, through the instance's budget, and the poll decides."""

    result: InboundResult = Field(
        description="`hinted`: the named task(s) will be polled now; `unknown_task`: no "
        "task pollhook tracks has that id at this instance (already ended, or never "
        "registered); `replayed`: this message was received before, nothing changes."
    )
    tasks: int = Field(description="Tasks made due by this callback (every tenant's).")


class ChallengeEcho(BaseModel):
    """MiniMax's check of a new callback URL, answered as it asks: its challenge back."""

    challenge: str
