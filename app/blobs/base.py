"""The object-storage port: what the archive needs of a store, and its one error base.

Keys look like `tasks/<uuid>/<name>`: segments of `[A-Za-z0-9._-]` separated by `/`, none
starting with `.` (so no `.`, `..` or hidden names, which leaves `.`-names to the stores'
own bookkeeping), at most 1,024 bytes as S3 allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from app.core.config import KEY_SEGMENT

MAX_KEY_BYTES = 1024

# Why an operation failed, for metrics and for deciding what to retry: `unreachable` (no
# connection or a timeout: retry), `denied` (credentials or permissions: fix the
# configuration), `not_found`, `invalid_key` (a bug in the caller), `other`.
BlobErrorReason = Literal["unreachable", "denied", "not_found", "invalid_key", "other"]


class BlobError(Exception):
    """Every failure of a BlobStore; obstore's and the OS's errors are translated to it where
    they enter (app/blobs/obstore_calls.py)."""

    def __init__(self, message: str, reason: BlobErrorReason) -> None:
        super().__init__(message)
        self.message = message
        self.reason: BlobErrorReason = reason


class BlobNotFound(BlobError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "not_found")


class InvalidKey(BlobError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "invalid_key")


def validate_key(key: str) -> str:
    """The key unchanged, or InvalidKey."""
    if (
        not key
        or len(key.encode()) > MAX_KEY_BYTES
        or not all(KEY_SEGMENT.fullmatch(part) for part in key.split("/"))
    ):
        raise InvalidKey(
            f"invalid object key {key[:80]!r}: segments of letters, digits, '.', '_' and '-' "
            "separated by '/', none starting with '.', at most 1024 bytes"
        )
    return key


class BlobStore(Protocol):
    """Where archived files live. Every method raises only BlobError."""

    # "s3" or "file": for logs and metrics labels.
    backend: ClassVar[str]

    def spool_dir(self) -> Path | None:
        """Where a caller should write the files it is about to put, for `put_file` to take
        them cheapest: a folder on the store's own disk, or None (the system's temp folder).
        The caller removes what it writes there."""
        ...

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        """Store the local file at `path` under `key`, replacing what was there. Streamed from
        disk (multipart for large files), never read whole into memory; atomic: a reader sees
        the old object or the whole new one. The object is served with `content_type`. The
        file at `path` is left as it was (a store may link it rather than copy it)."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove these objects; keys that do not exist are fine."""
        ...

    async def link(self, key: str, *, expires_in_s: float, content_type: str) -> str:
        """A fresh URL that anyone can GET, without credentials, until it expires in
        `expires_in_s`. `content_type` is what the caller expects it to serve: both stores
        serve the type given to `put_file`, which the caller passes here too; the URL is
        signed for the object, not the type. Does not check that the object exists."""
        ...

    async def exists(self, key: str) -> bool: ...
