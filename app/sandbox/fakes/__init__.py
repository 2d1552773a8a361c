"""The sandbox's fakes of the providers added after MiniMax T2A and Jimmy, one module each.

A fake serves its provider's query routes (through `app.sandbox.gate`), its own answers to
the gate's faults, and the result files its URLs name under `/_sandbox/files/{provider}/`.
Tasks, scripts, faults, rates and counts are the sandbox's shared state (app/sandbox/state.py).
"""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter

from app.sandbox.fakes.elevenlabs import ElevenLabsFake
from app.sandbox.gate import Answers, Clock
from app.sandbox.media import GeneratedFile
from app.sandbox.state import Provider, Sandbox, Task


class Fake(Protocol):
    provider: Provider
    answers: Answers

    def router(self, sandbox: Sandbox, clock: Clock) -> APIRouter:
        """The provider's own routes, each passing `gate` first."""
        ...

    def result_file(self, sandbox: Sandbox, name: str) -> tuple[Task, GeneratedFile] | None:
        """The task and file `/_sandbox/files/{provider}/{name}` names, or None when the
        name is none of its files. The route serves it once the task's result exists."""
        ...


# Every fake, in the order of docs/providers.md.
FAKES: tuple[Fake, ...] = (ElevenLabsFake(),)
