"""The generated result files: valid MP3 frames, SRT, MiniMax's tar; exact sizes; deterministic."""

from __future__ import annotations

import io
import itertools
import json
import re
import tarfile

import pytest

from app.sandbox.media import (
    CHUNK_BYTES,
    MAX_CUES,
    MIN_AUDIO_BYTES,
    MIN_TAG_BYTES,
    MP3_FRAME_BYTES,
    TONE_LINES,
    Mp3Layout,
    cues,
    jimmy_audio,
    jimmy_subtitles,
    minimax_archive,
    minimax_member_names,
    minimax_members,
    mp3_file,
    tone_hz,
    tone_line,
)
from tests.sandbox.support import amplitude_at, decode_mp3, parse_mp3


@pytest.mark.parametrize(
    ("size", "tag_bytes", "frames"),
    [
        (MIN_AUDIO_BYTES, MIN_TAG_BYTES, 1),
        (MIN_AUDIO_BYTES + MP3_FRAME_BYTES - 1, MIN_TAG_BYTES + MP3_FRAME_BYTES - 1, 1),
        (MIN_AUDIO_BYTES + MP3_FRAME_BYTES, MIN_TAG_BYTES, 2),
        (16_384, 16_384 - 42 * MP3_FRAME_BYTES, 42),
        (300_000_000, 300_000_000 - 781_249 * MP3_FRAME_BYTES, 781_249),
    ],
)
def test_mp3_layout_fills_the_size_exactly(size: int, tag_bytes: int, frames: int) -> None:
    layout = Mp3Layout.of(size)
    assert (layout.tag_bytes, layout.frames) == (tag_bytes, frames)
    assert layout.tag_bytes + layout.frames * MP3_FRAME_BYTES == size


def test_an_mp3_smaller_than_a_tag_and_a_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        mp3_file("x", MIN_AUDIO_BYTES - 1)


@pytest.mark.parametrize(
    "size", [MIN_AUDIO_BYTES, 1000, 16_384, CHUNK_BYTES * 3 + 7, 2 * 1024 * 1024]
)
def test_mp3_is_whole_frames_after_its_tag(size: int) -> None:
    file = jimmy_audio("audio_1", size)
    data = file.read()
    assert len(data) == file.size == size
    assert file.content_type == "audio/mpeg"
    assert parse_mp3(data) == Mp3Layout.of(size).frames


def seeds_for_every_tone() -> list[str]:
    seeds: dict[int, str] = {}
    for number in itertools.count():
        seeds.setdefault(tone_line(f"seed-{number}"), f"seed-{number}")
        if len(seeds) == len(TONE_LINES):
            return [seeds[line] for line in TONE_LINES]
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", seeds_for_every_tone())
def test_mp3_plays_a_clean_tone_at_its_frequency(seed: str) -> None:
    size = 60_000
    samples = decode_mp3(mp3_file(seed, size).read())
    assert len(samples) == Mp3Layout.of(size).frames * 1152
    steady = samples[2304:50_304]  # past the decoder's first two frames, one second
    hz = tone_hz(seed)
    tone = amplitude_at(steady, hz)
    assert tone > 1000  # audible
    assert max(map(abs, steady)) < 16_000  # never clipped
    # The tone dominates. One line alone is not a pure sinusoid: the lines either side carry
    # sidebands at a third of its level; beyond them, and at the other tones, nothing.
    line_hz = 48_000 / 1152
    assert all(amplitude_at(steady, hz + line_hz * step) < tone / 2 for step in (-1, 1))
    farther = [hz + line_hz * step for step in (-3, -2, 2, 3)]
    farther += [(line + 0.5) * line_hz for line in TONE_LINES if abs(line - tone_line(seed)) > 1]
    assert all(amplitude_at(steady, other) < tone / 10 for other in farther)


def test_mp3_is_a_function_of_its_seed() -> None:
    first = jimmy_audio("audio_1", 50_000)
    assert first.read() == jimmy_audio("audio_1", 50_000).read()
    assert first.read() != jimmy_audio("audio_2", 50_000).read()
    # Frames differ from each other too, so a copy that drops or reorders one is caught.
    frames = Mp3Layout.of(50_000)
    body = first.read()[frames.tag_bytes :]
    chunks = {body[i : i + MP3_FRAME_BYTES] for i in range(0, len(body), MP3_FRAME_BYTES)}
    assert len(chunks) == frames.frames


def test_large_files_come_in_bounded_chunks() -> None:
    file = jimmy_audio("audio_big", 20 * 1024 * 1024)
    sizes = [len(chunk) for chunk in file.chunks()]
    assert sum(sizes) == file.size
    assert max(sizes) <= CHUNK_BYTES


@pytest.mark.parametrize(
    ("duration_ms", "count"),
    [(0, 1), (1, 1), (4000, 1), (4001, 2), (60_000, 15), (10**9, MAX_CUES)],
)
def test_cues_cover_the_audio(duration_ms: int, count: int) -> None:
    got = cues("seed", duration_ms)
    assert len(got) == count
    assert got[0].start_ms == 0
    assert got[-1].end_ms == duration_ms
    for before, after in itertools.pairwise(got):
        assert before.end_ms == after.start_ms
        assert after.text_begin == before.text_end + 1
    assert all(c.text.endswith(".") and c.text_end - c.text_begin == len(c.text) for c in got)


def test_jimmy_subtitles_are_srt_timed_to_the_audio() -> None:
    size = 200_000
    file = jimmy_subtitles("audio_1", size)
    text = file.read().decode()
    assert file.size == len(file.read())
    assert file.content_type.startswith("text/plain")
    blocks = text.strip("\n").split("\n\n")
    duration_ms = Mp3Layout.of(size).duration_ms
    assert len(blocks) == len(cues("any", duration_ms))
    for number, block in enumerate(blocks, start=1):
        index, times, words = block.split("\n")
        assert index == str(number)
        assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", times)
        assert words
    h, m, rest = blocks[-1].split("\n")[1].split(" --> ")[1].split(":")
    s, ms = rest.split(",")
    assert ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms) == duration_ms
    assert text != jimmy_subtitles("audio_2", size).read().decode()


@pytest.mark.parametrize("audio_bytes", [MIN_AUDIO_BYTES, 16_384, 1_000_003])
def test_minimax_archive_is_the_tar_minimax_ships(audio_bytes: int) -> None:
    task_id = "95157322514444"
    archive = minimax_archive(task_id, audio_bytes, mtime=1_800_000_000)
    data = archive.read()
    assert len(data) == archive.size
    assert archive.content_type == "application/x-tar"
    names = minimax_member_names(task_id)
    assert names == (
        f"{task_id}/content-{task_id}.mp3",
        f"{task_id}/content-{task_id}.titles",
        f"{task_id}/content-{task_id}.extra",
    )
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == list(names)
        assert all(m.isfile() and m.mtime == 1_800_000_000 for m in members)

        def content(name: str) -> bytes:
            extracted = tar.extractfile(name)
            assert extracted is not None
            return extracted.read()

        audio = content(names[0])
        titles = json.loads(content(names[1]))
        extra = json.loads(content(names[2]))
        # What an archive that unpacks the tar should hold, member by member.
        expected = minimax_members(task_id, audio_bytes)
        assert list(expected) == list(names)
        assert all(content(name) == file.read() for name, file in expected.items())
    layout = Mp3Layout.of(audio_bytes)
    assert len(audio) == audio_bytes
    assert parse_mp3(audio) == layout.frames
    assert titles[0]["time_begin"] == 0
    assert titles[-1]["time_end"] == layout.duration_ms
    assert set(titles[0]) == {"text", "time_begin", "time_end", "text_begin", "text_end"}
    assert extra["audio_size"] == audio_bytes
    assert extra["audio_length"] == layout.duration_ms
    assert (extra["audio_sample_rate"], extra["bitrate"], extra["audio_format"]) == (
        48_000,
        128_000,
        "mp3",
    )
    assert extra["word_count"] == sum(len(t["text"].split()) for t in titles)


def test_minimax_archives_differ_by_task_and_repeat_per_task() -> None:
    one = minimax_archive("1", 16_384, mtime=1).read()
    assert one == minimax_archive("1", 16_384, mtime=1).read()
    assert one != minimax_archive("2", 16_384, mtime=1).read()
