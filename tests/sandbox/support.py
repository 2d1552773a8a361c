"""What the sandbox's tests share: the real `pollhook sandbox` process, a fake clock for the
in-process app, an MP3 frame walker and decoder."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import miniaudio

from app.sandbox.state import Instant
from tests.helpers import free_port


@contextmanager
def sandbox_command(*options: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m app.cli sandbox` on a free loopback port, ready; killed on the way out."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "sandbox", "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def _wait_ready(proc: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(f"{base}/_sandbox/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("pollhook sandbox did not become ready")


class FakeClock:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 1_000.0

    def __call__(self) -> Instant:
        return Instant(wall=self.wall, mono=self.mono)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


# MPEG-1 Layer III bit rates (kbit/s) by index, and sample rates (Hz) by index.
BITRATES = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
SAMPLE_RATES = (44_100, 48_000, 32_000)


def read_syncsafe(raw: bytes) -> int:
    return (raw[0] << 21) | (raw[1] << 14) | (raw[2] << 7) | raw[3]


def parse_mp3(data: bytes) -> int:
    """Walk an MP3 the way a decoder finds its frames: skip the ID3v2 tag by its declared
    size, then read each frame header and jump by the length it implies. Returns the
    frame count; fails on anything that is not an MPEG-1 Layer III frame."""
    assert data[:3] == b"ID3"
    assert data[3] == 4
    assert all(byte < 0x80 for byte in data[6:10])
    offset = 10 + read_syncsafe(data[6:10])
    assert data[10:14] == b"TIT2"
    frames = 0
    while offset < len(data):
        header = int.from_bytes(data[offset : offset + 4], "big")
        assert header >> 21 == 0x7FF, f"no frame sync at {offset}"
        assert (header >> 19) & 0b11 == 0b11  # MPEG-1
        assert (header >> 17) & 0b11 == 0b01  # Layer III
        bitrate = BITRATES[(header >> 12) & 0xF] * 1000
        sample_rate = SAMPLE_RATES[(header >> 10) & 0b11]
        padding = (header >> 9) & 1
        length = 144 * bitrate // sample_rate + padding
        assert offset + length <= len(data), "a frame runs past the end"
        offset += length
        frames += 1
    return frames


def decode_mp3(data: bytes) -> list[int]:
    """The MP3's samples as a player gets them: mono, 48 kHz, 16-bit."""
    decoded = miniaudio.decode(
        data, output_format=miniaudio.SampleFormat.SIGNED16, nchannels=1, sample_rate=48_000
    )
    return list(decoded.samples)


def amplitude_at(samples: list[int], hz: float, rate: int = 48_000) -> float:
    """The amplitude of the sinusoid at `hz` in `samples` (Goertzel): a pure tone of peak A
    at exactly that frequency gives A / 2."""
    coefficient = 2 * math.cos(2 * math.pi * hz / rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    power = previous * previous + before * before - coefficient * previous * before
    return math.sqrt(max(power, 0.0)) / len(samples)
