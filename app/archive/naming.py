"""How archived files are named, keyed, typed and sorted into kinds: pure rules.

A name comes from the provider (a URL's last path segment, a tar member's base name) and
so from upstream: it is cut down to a safe character set before it becomes part of a key.
"""

from __future__ import annotations

import re
import uuid
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

MAX_NAME_CHARS = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# By extension: what a file is, and its content type. MiniMax's tar holds `<name>.mp3` (or
# the requested format), `.titles` (sentence timings, JSON) and `.extra` (JSON metadata).
_AUDIO = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".pcm": "audio/L16",
    ".opus": "audio/opus",
    ".ogg": "audio/ogg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
}
_SUBTITLE = {
    ".titles": "application/json",
    ".srt": "application/x-subrip",
    ".vtt": "text/vtt",
    ".lrc": "text/plain",
}
_EXTRA = {".extra": "application/json", ".json": "application/json", ".txt": "text/plain"}
_TYPE = re.compile(r"\A[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}\Z")
OCTET_STREAM = "application/octet-stream"
_PLAIN_TYPES = frozenset({"text/plain", "application/json", "application/x-subrip", "text/vtt"})


def safe_name(raw: str, fallback: str) -> str:
    """`raw` as a file name of `[A-Za-z0-9._-]`, at most MAX_NAME_CHARS, not hidden and
    not only dots; `fallback` when nothing of it is left."""
    name = _UNSAFE.sub("_", PurePosixPath(raw.replace("\\", "/")).name).strip("._")
    if len(name) > MAX_NAME_CHARS:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 16 else ""
        name = name[: MAX_NAME_CHARS - len(keep) - 1] + ("." + keep if keep else "")
    return name or fallback


def url_name(url: str, fallback: str) -> str:
    """The last path segment of a result URL, made safe."""
    return safe_name(unquote(urlsplit(url).path.rsplit("/", 1)[-1]), fallback)


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, made unique among the task's names in `taken` by a numeric prefix."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{n}-{name}"[:MAX_NAME_CHARS]
    return candidate


def object_key(tenant: str, task_id: uuid.UUID, name: str) -> str:
    """Where a task's file lives in the store: one folder per tenant and task."""
    return f"{tenant}/{task_id}/{name}"


def member_kind(name: str) -> str:
    """What a bundle's member is, by its extension: `audio`, `subtitle` or `extra`."""
    ext = PurePosixPath(name).suffix.lower()
    if ext in _AUDIO:
        return "audio"
    if ext in _SUBTITLE:
        return "subtitle"
    return "extra"


def content_type(name: str, declared: str | None) -> str:
    """The file's content type: by a known extension first (a provider's CDN often says
    `application/octet-stream` for audio), else what the source declared when it is a
    well-formed type, else `application/octet-stream`."""
    ext = PurePosixPath(name).suffix.lower()
    for table in (_AUDIO, _SUBTITLE, _EXTRA):
        if ext in table:
            return table[ext]
    if declared:
        base = declared.split(";", 1)[0].strip().lower()
        # Only what a result file is: a file:// archive serves it from pollhook's own
        # origin, where an upstream's text/html or image/svg+xml would run as a page.
        if _TYPE.match(base) and (base.startswith("audio/") or base in _PLAIN_TYPES):
            return base
    return OCTET_STREAM
