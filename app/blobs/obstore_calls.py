"""What both obstore adapters share: their errors as BlobError, and the upload of a file.

obstore raises the builtin FileNotFoundError for a missing object, ValueError for a path it
cannot parse, its own exception classes for the rest; a connection failure is a GenericError
whose text carries the HTTP error kind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import obstore
from obstore.exceptions import (
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import LocalStore, S3Store

from app.blobs.base import BlobError, BlobErrorReason, BlobNotFound, InvalidKey, validate_key

# Markers of a request that never got an answer, in object_store's error text.
_UNREACHABLE = ("error sending request", "kind: Connect", "kind: Timeout", "timed out")


def _first_line(exc: BaseException) -> str:
    # obstore appends a multi-line "Debug source" dump: the first line says it all.
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


@contextmanager
def translated(action: str, key: str) -> Iterator[None]:
    """Run an obstore call, raising BlobError instead of what it raises."""
    try:
        yield
    except BlobError:
        raise
    except (FileNotFoundError, NotFoundError) as exc:
        raise BlobNotFound(f"{action} {key}: not found") from exc
    except (PermissionDeniedError, UnauthenticatedError, PermissionError) as exc:
        raise BlobError(f"{action} {key}: {_first_line(exc)}", "denied") from exc
    except ValueError as exc:  # obstore's path parser
        raise InvalidKey(f"{action} {key}: {_first_line(exc)}") from exc
    except (BaseError, OSError) as exc:
        text = str(exc)
        reason: BlobErrorReason = "unreachable" if any(m in text for m in _UNREACHABLE) else "other"
        raise BlobError(f"{action} {key}: {_first_line(exc)}", reason) from exc


# A multipart upload holds up to PARTS_IN_FLIGHT parts of its file in memory at once: 20 MiB
# at the 5 MiB part size (S3's smallest), whatever the file's size.
MIN_PART_BYTES = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 4
# S3 allows 10,000 parts; the part size grows so a file of any size stays below that.
MAX_PARTS = 9_000


async def upload(
    store: S3Store | LocalStore,
    key: str,
    path: Path,
    *,
    attributes: dict[str, str] | None,
) -> None:
    """Upload the file at `path` by its path: obstore reads it in Rust, part by part."""
    try:
        # A stat of a local file: cheaper in place than the thread hop around it.
        size = os.stat(path).st_size
    except OSError as exc:
        # The caller's own file, not the store's object: never a not_found of the store.
        raise BlobError(
            f"put {key}: cannot read the file to upload: {exc.strerror}", "other"
        ) from exc
    with translated("put", key):
        await obstore.put_async(
            store,
            key,
            path,
            attributes=attributes,
            chunk_size=max(MIN_PART_BYTES, -(-size // MAX_PARTS)),
            max_concurrency=PARTS_IN_FLIGHT,
        )


async def exists(store: S3Store | LocalStore, key: str) -> bool:
    """Whether the store holds `key` (a HEAD)."""
    validate_key(key)
    try:
        with translated("head", key):
            await obstore.head_async(store, key)
    except BlobNotFound:
        return False
    return True
