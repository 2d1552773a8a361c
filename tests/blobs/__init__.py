"""Helpers of the object-store tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path

import psutil

MIB = 1024 * 1024


def write_random_file(path: Path, size: int) -> bytes:
    """A file of `size` random bytes, written in 1 MiB pieces; returns its first MiB."""
    first = b""
    with path.open("wb") as f:
        for offset in range(0, size, MIB):
            piece = os.urandom(min(MIB, size - offset))
            first = first or piece
            f.write(piece)
    return first


async def peak_rss_growth(operation: Awaitable[None]) -> int:
    """How far this process's resident memory rose above its level before `operation`,
    sampled every 10 ms while it ran."""
    process = psutil.Process()

    def rss() -> int:
        return int(process.memory_info().rss)

    before = peak = rss()
    task = asyncio.ensure_future(operation)
    while not task.done():
        peak = max(peak, rss())
        await asyncio.sleep(0.01)
    await task
    return max(peak, rss()) - before
