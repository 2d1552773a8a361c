"""The sandbox's fakes of the providers added after MiniMax T2A and Jimmy, one module each.

A fake serves its provider's query routes (through `app.sandbox.gate`), its own answers to
the gate's faults, and the result files its URLs name under `/_sandbox/files/{provider}/`.
Tasks, scripts, faults, rates and counts are the sandbox's shared state (app/sandbox/state.py).
"""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter

from app.sandbox.fakes import dashscope, fal
from app.sandbox.fakes.assemblyai import AssemblyAIFake
from app.sandbox.fakes.elevenlabs import ElevenLabsFake
from app.sandbox.fakes.minimax_video import MinimaxVideoFake
from app.sandbox.fakes.replicate import ReplicateFake
from app.sandbox.gate import Answers, Clock, Json
from app.sandbox.media import GeneratedFile
from app.sandbox.state import Provider, Sandbox, Task


class Fake(Protocol):
    provider: Provider
    answers: Answers
    # Whether its callbacks are signed (Standard Webhooks, with the sandbox's
    # callback_secret); unsigned ones carry pollhook's token in their URL.
    signs_callbacks: bool
    # Whether the provider posts to a URL given at creation (a script's callback_url).
    calls_back: bool

    def callback_body(self, task: Task, base_url: str) -> Json | None:
        """What the provider posts to a task's callback URL when the task ends; None for a
        provider that calls back on no URL."""
        ...

    def router(self, sandbox: Sandbox, clock: Clock) -> APIRouter:
        """The provider's own routes, each passing `gate` first."""
        ...

    def result_file(self, sandbox: Sandbox, name: str) -> tuple[Task, GeneratedFile] | None:
        """The task and file `/_sandbox/files/{provider}/{name}` names, or None when the
        name is none of its files. The route serves it once the task's result exists."""
        ...


# Every fake, in the order of docs/providers.md.
FAKES: tuple[Fake, ...] = (
    ReplicateFake(),
    MinimaxVideoFake(),
    dashscope.FAKE,
    AssemblyAIFake(),
    fal.FAKE,
    ElevenLabsFake(),
)
