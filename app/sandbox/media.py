"""The result files the sandbox serves: MP3 audio, SRT subtitles and MiniMax's tar archive.

Pure and deterministic: a file is a function of its task's id and scripted size, so a test
can compute exactly the bytes the sandbox serves (`GeneratedFile.read`, or `chunks` for a
large one) and compare an archived copy with them. Files are generated chunk by chunk, so a
300 MB result costs the sandbox one chunk of memory, never the whole file.

The audio is a tone in MPEG-1 Layer III, encoded by hand since the sandbox has no encoder:
each granule holds one spectral line, its sign turning (+, -, -, +) from granule to granule as a
steady sinusoid's would, which decoders play as a tone at the line's centre frequency (with
sidebands a line either side at a third of its level: one line alone is not a pure sinusoid).
The task's seed picks the line, and fills each frame's ancillary bytes (which decoders skip)
after the frame's index, so different tasks give different files and a copy that drops or
reorders a frame differs.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# MPEG-1 Layer III, 128 kbit/s, 48 kHz, mono, no CRC: 144 * 128000 / 48000 = 384 bytes a
# frame with no padding slot, so every frame has the same length and any size is reachable.
MP3_HEADER = bytes((0xFF, 0xFB, 0x94, 0xC4))
MP3_FRAME_BYTES = 384
MP3_SAMPLE_RATE = 48_000
MP3_BITRATE = 128_000
MP3_SAMPLES_PER_FRAME = 1152
_SIDE_INFO_BYTES = 17  # mono
_GRANULE_LINES = 576
# Lines 8 and 9 of the first four subbands (354 Hz to 2.6 kHz): the middle of a subband,
# where the decoder's alias reduction between subbands leaves them alone.
TONE_LINES = (8, 9, 26, 27, 44, 45, 62, 63)
# About -13 dBFS: a line's value is 2 ** ((global_gain - 210) / 4).
_GLOBAL_GAIN = 201
# The sign of the line in granules 0, 1, 2, 3, then again: a sinusoid at the centre of an
# MDCT line advances a quarter turn (mod a half) per granule.
_SIGNS = (False, True, True, False)
_FRAME_INDEX_BYTES = 4
CHUNK_BYTES = 64 * 1024
_FRAMES_PER_CHUNK = CHUNK_BYTES // MP3_FRAME_BYTES
TITLE = "pollhook sandbox"
TAR_BLOCK = 512
# Subtitles: one cue per this much audio, and never more than MAX_CUES (a 300 MB file is
# five hours long; its subtitles stay small).
CUE_MS = 4000
MAX_CUES = 100
_WORDS: tuple[str, ...] = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog")
_WORDS += ("while", "seven", "bright", "voices", "read", "long", "pages", "aloud", "quiet")

Chunks = Callable[[], Iterator[bytes]]


@dataclass(frozen=True, slots=True)
class GeneratedFile:
    """A file the sandbox serves: its exact length, its type, and its bytes on demand."""

    size: int
    content_type: str
    chunks: Chunks

    def read(self) -> bytes:
        """The whole file; for small files and tests."""
        return b"".join(self.chunks())


# ---------------------------------------------------------------------------------------------
# MP3


def _syncsafe(value: int) -> bytes:
    """ID3v2's 28-bit integers: seven bits per byte, so no byte looks like a frame sync."""
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _id3_tag(size: int) -> bytes:
    """An ID3v2.4 tag of exactly `size` bytes: a TIT2 frame, then zero padding."""
    text = b"\x03" + TITLE.encode()  # 3: UTF-8
    frame = b"TIT2" + _syncsafe(len(text)) + b"\x00\x00" + text
    body = frame + bytes(size - 10 - len(frame))
    return b"ID3\x04\x00\x00" + _syncsafe(len(body)) + body


MIN_TAG_BYTES = len(_id3_tag(10 + 10 + 1 + len(TITLE)))
MIN_AUDIO_BYTES = MIN_TAG_BYTES + MP3_FRAME_BYTES


@dataclass(frozen=True, slots=True)
class Mp3Layout:
    """An MP3 of a given size: an ID3 tag that absorbs the remainder, then whole frames."""

    tag_bytes: int
    frames: int

    @classmethod
    def of(cls, size: int) -> Mp3Layout:
        if size < MIN_AUDIO_BYTES:
            raise ValueError(f"an MP3 needs at least {MIN_AUDIO_BYTES} bytes, not {size}")
        frames = (size - MIN_TAG_BYTES) // MP3_FRAME_BYTES
        return cls(tag_bytes=size - frames * MP3_FRAME_BYTES, frames=frames)

    @property
    def duration_ms(self) -> int:
        return self.frames * MP3_SAMPLES_PER_FRAME * 1000 // MP3_SAMPLE_RATE


def _seed(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def tone_line(seed: str) -> int:
    """The spectral line the audio for `seed` sounds."""
    return TONE_LINES[_seed(seed)[0] % len(TONE_LINES)]


def tone_hz(seed: str) -> float:
    """The frequency of the audio for `seed`: its line's centre."""
    return (tone_line(seed) + 0.5) * MP3_SAMPLE_RATE / (2 * _GRANULE_LINES)


class _Bits:
    """A big-endian bit string."""

    def __init__(self) -> None:
        self.value = 0
        self.width = 0

    def put(self, value: int, width: int) -> None:
        self.value = (self.value << width) | value
        self.width += width

    def to_bytes(self, length: int) -> bytes:
        return (self.value << (length * 8 - self.width)).to_bytes(length, "big")


def _granule_data(line: int, negative: bool) -> _Bits:
    """Huffman table 1 over the big_values pairs up to `line`: 1 for each pair of zeros,
    then 01 (a one, a zero) or 001 (a zero, a one) and the one's sign bit."""
    bits = _Bits()
    for _ in range(line // 2):
        bits.put(0b1, 1)
    if line % 2 == 0:
        bits.put(0b01, 2)
    else:
        bits.put(0b001, 3)
    bits.put(int(negative), 1)
    return bits


def _frame_head(line: int, signs: tuple[bool, bool]) -> bytes:
    """Header, side information and main data (byte-aligned) of a frame whose two granules
    hold `line` with these signs. main_data_begin is 0, so no frame leans on the one before
    and the bytes after the main data are free."""
    side = _Bits()
    side.put(0, 9 + 5 + 4)  # main_data_begin, private bits, scfsi
    main = _Bits()
    for negative in signs:
        data = _granule_data(line, negative)
        side.put(data.width, 12)  # part2_3_length: no scalefactors, so all Huffman data
        side.put(line // 2 + 1, 9)  # big_values: pairs
        side.put(_GLOBAL_GAIN, 8)
        side.put(0, 4 + 1)  # scalefac_compress, window_switching_flag: long blocks
        side.put((1 << 10) | (1 << 5) | 1, 15)  # table 1 in all three regions
        side.put(15, 4)  # region0_count
        side.put(7, 3)  # region1_count
        side.put(0, 3)  # preflag, scalefac_scale, count1table_select
        main.put(data.value, data.width)
    return MP3_HEADER + side.to_bytes(_SIDE_INFO_BYTES) + main.to_bytes((main.width + 7) // 8)


def mp3_chunks(seed: str, size: int) -> Iterator[bytes]:
    """The MP3 of `size` bytes for `seed`, in chunks of at most CHUNK_BYTES plus a tag."""
    layout = Mp3Layout.of(size)
    yield _id3_tag(layout.tag_bytes)
    line = tone_line(seed)
    # A frame holds two granules, so frames alternate between two sign pairs.
    heads = (_frame_head(line, _SIGNS[:2]), _frame_head(line, _SIGNS[2:]))
    spare = MP3_FRAME_BYTES - len(heads[0]) - _FRAME_INDEX_BYTES
    suffix = hashlib.shake_256(_seed(seed)).digest(spare)
    for start in range(0, layout.frames, _FRAMES_PER_CHUNK):
        end = min(start + _FRAMES_PER_CHUNK, layout.frames)
        yield b"".join(
            heads[index % 2] + index.to_bytes(_FRAME_INDEX_BYTES, "big") + suffix
            for index in range(start, end)
        )


def mp3_file(seed: str, size: int) -> GeneratedFile:
    Mp3Layout.of(size)  # refuse an impossible size now, not mid-response
    return GeneratedFile(size, "audio/mpeg", lambda: mp3_chunks(seed, size))


# ---------------------------------------------------------------------------------------------
# Subtitles and metadata


@dataclass(frozen=True, slots=True)
class Cue:
    """One sentence of the script: its text, its time in the audio and its place in the text."""

    text: str
    start_ms: int
    end_ms: int
    text_begin: int
    text_end: int


def cues(seed: str, duration_ms: int) -> list[Cue]:
    """Sentences spread evenly over the audio, their words drawn from the seed."""
    count = min(max(math.ceil(duration_ms / CUE_MS), 1), MAX_CUES)
    draws = hashlib.shake_256(_seed(seed) + b"cues").digest(count * 9)
    result: list[Cue] = []
    offset = 0
    for index in range(count):
        picks = draws[index * 9 : index * 9 + 9]
        words = [_WORDS[b % len(_WORDS)] for b in picks[1 : 1 + 4 + picks[0] % 5]]
        text = " ".join(words).capitalize() + "."
        result.append(
            Cue(
                text=text,
                start_ms=duration_ms * index // count,
                end_ms=duration_ms * (index + 1) // count,
                text_begin=offset,
                text_end=offset + len(text),
            )
        )
        offset += len(text) + 1
    return result


def _srt_time(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02}:{minutes:02}:{seconds:02},{millis:03}"


def srt_text(seed: str, duration_ms: int) -> bytes:
    blocks = [
        f"{n}\n{_srt_time(c.start_ms)} --> {_srt_time(c.end_ms)}\n{c.text}\n"
        for n, c in enumerate(cues(seed, duration_ms), start=1)
    ]
    return "\n".join(blocks).encode()


def titles_json(seed: str, duration_ms: int) -> bytes:
    """MiniMax's sentence timings: times in milliseconds, text offsets in characters."""
    sentences = [
        {
            "text": c.text,
            "time_begin": c.start_ms,
            "time_end": c.end_ms,
            "text_begin": c.text_begin,
            "text_end": c.text_end,
        }
        for c in cues(seed, duration_ms)
    ]
    return json.dumps(sentences, ensure_ascii=False).encode()


def extra_json(seed: str, audio_bytes: int) -> bytes:
    """MiniMax's `extra_info` for the audio beside it."""
    layout = Mp3Layout.of(audio_bytes)
    text = " ".join(c.text for c in cues(seed, layout.duration_ms))
    return json.dumps(
        {
            "audio_length": layout.duration_ms,
            "audio_sample_rate": MP3_SAMPLE_RATE,
            "audio_size": audio_bytes,
            "bitrate": MP3_BITRATE,
            "word_count": len(text.split()),
            "invisible_character_ratio": 0,
            "usage_characters": len(text),
            "audio_format": "mp3",
            "audio_channel": 1,
        }
    ).encode()


# ---------------------------------------------------------------------------------------------
# Tar


def _tar_padding(size: int) -> int:
    return -size % TAR_BLOCK


def tar_header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


@dataclass(frozen=True, slots=True)
class TarMember:
    name: str
    size: int
    chunks: Chunks


def tar_size(members: list[TarMember]) -> int:
    """Each member's header and padded data, then the two zero blocks that end an archive."""
    data = sum(TAR_BLOCK + m.size + _tar_padding(m.size) for m in members)
    return data + 2 * TAR_BLOCK


def tar_chunks(members: list[TarMember], mtime: int) -> Iterator[bytes]:
    for member in members:
        yield tar_header(member.name, member.size, mtime)
        yield from member.chunks()
        yield bytes(_tar_padding(member.size))
    yield bytes(2 * TAR_BLOCK)


# ---------------------------------------------------------------------------------------------
# What each provider's URLs serve


def minimax_member_names(task_id: str) -> tuple[str, str, str]:
    """The audio, the sentence timings and the metadata, under a directory named for the task."""
    stem = f"{task_id}/content-{task_id}"
    return f"{stem}.mp3", f"{stem}.titles", f"{stem}.extra"


def _constant(content: bytes, content_type: str) -> GeneratedFile:
    return GeneratedFile(len(content), content_type, lambda: iter((content,)))


def minimax_members(task_id: str, audio_bytes: int) -> dict[str, GeneratedFile]:
    """The members of a MiniMax task's tar by name, in archive order: the audio, the
    sentence timings and the metadata (what an archive that unpacks the tar should hold)."""
    seed = f"minimax:{task_id}"
    duration_ms = Mp3Layout.of(audio_bytes).duration_ms
    audio_name, titles_name, extra_name = minimax_member_names(task_id)
    return {
        audio_name: mp3_file(seed, audio_bytes),
        titles_name: _constant(titles_json(seed, duration_ms), "application/json"),
        extra_name: _constant(extra_json(seed, audio_bytes), "application/json"),
    }


def minimax_archive(task_id: str, audio_bytes: int, mtime: int) -> GeneratedFile:
    """The tar behind a MiniMax task's download URL (`mtime`: when the task finished)."""
    members = [
        TarMember(name, file.size, file.chunks)
        for name, file in minimax_members(task_id, audio_bytes).items()
    ]
    return GeneratedFile(tar_size(members), "application/x-tar", lambda: tar_chunks(members, mtime))


def jimmy_audio(task_id: str, audio_bytes: int) -> GeneratedFile:
    """The MP3 behind a Jimmy task's audioUrl."""
    return mp3_file(f"jimmy:{task_id}", audio_bytes)


def jimmy_subtitles(task_id: str, audio_bytes: int) -> GeneratedFile:
    """The SRT behind a Jimmy task's subtitleFile, timed to its audio."""
    text = srt_text(f"jimmy:{task_id}", Mp3Layout.of(audio_bytes).duration_ms)
    return _constant(text, "text/plain; charset=utf-8")
