"""BlobStore in a folder: the embedded archive (`file://`).

Objects are files under the root, written atomically by obstore (a staging file renamed into
place). Their content types live beside them under `.types/` (a LocalStore keeps no
attributes); keys never start with `.`, so neither that folder nor `.link-key` is a key.

A link is a URL of pollhook's own download route (app/blobs/endpoints.py):
`{public_url}/v1/archive/files/{key}?expires=<unix seconds>&signature=<hex>`, the signature
an HMAC-SHA256 of the key and the expiry. Its key is ArchiveSettings.link_secret, or else a
random key created once in `<root>/.link-key`, so every process that shares the folder signs
and checks with the same one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import obstore
from obstore.store import LocalStore

from app.blobs.base import BlobError, BlobNotFound, InvalidKey, validate_key
from app.blobs.obstore_calls import exists, translated, upload
from app.core.keyfile import load_or_create_key

LINK_KEY_FILE = ".link-key"
TYPES_FOLDER = ".types"
LINK_PATH = "/v1/archive/files/"
# Where copies spool beside the objects (LocalBlobStore.spool_dir).
SPOOL_DIR = ".spool"


class InvalidLink(BlobError):
    """The signature does not match the key and expiry (or the link is malformed)."""

    def __init__(self) -> None:
        super().__init__("this link is not valid", "denied")


class ExpiredLink(BlobError):
    def __init__(self) -> None:
        super().__init__("this link has expired", "denied")


@dataclass(frozen=True)
class LocalFile:
    """What a valid link serves."""

    path: Path
    content_type: str
    size: int


def load_link_key(root: Path) -> bytes:
    """The random link-signing key of the archive at `root`, created on first use."""
    try:
        return load_or_create_key(root / LINK_KEY_FILE)
    except (OSError, ValueError) as exc:
        raise BlobError(f"cannot read or create the archive's link key: {exc}", "other") from exc


class LocalBlobStore:
    backend: ClassVar[str] = "file"

    def __init__(
        self,
        root: Path,
        *,
        public_url: str,
        link_key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._root = root.resolve()
        self._root.mkdir(parents=True, exist_ok=True)
        # automatic_cleanup: deleting a task's last file removes its emptied folders too.
        self._store = LocalStore(self._root, automatic_cleanup=True)
        self._public_url = public_url.rstrip("/")
        self._link_key = link_key
        self._clock = clock

    def spool_dir(self) -> Path | None:
        # Beside the objects, on their disk: put_file then links a file rather than copying
        # it. A key never starts with a dot, so nothing here can be linked to or served.
        spool = self._root / SPOOL_DIR
        spool.mkdir(exist_ok=True)
        return spool

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        validate_key(key)
        # The type first: an object is never visible without it.
        with translated("put", key):
            await obstore.put_async(self._store, self._type_key(key), content_type.encode())
        if not self._link_into_place(key, path):
            await upload(self._store, key, path, attributes=None)

    def _link_into_place(self, key: str, path: Path) -> bool:
        """Put the file by a hard link and a rename, atomic like the store's own write and
        without copying a byte; False where a link cannot be made (another disk, a file
        system without them), for the caller to copy it instead."""
        target = self._root / key
        staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, staging)
        except OSError:
            return False
        try:
            os.replace(staging, target)
        except OSError as exc:
            staging.unlink(missing_ok=True)
            raise BlobError(f"put {key}: {exc.strerror}", "other") from exc
        return True

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            validate_key(key)
            for path in (key, self._type_key(key)):
                try:
                    with translated("delete", key):
                        await obstore.delete_async(self._store, path)
                except BlobNotFound:
                    pass

    async def link(self, key: str, *, expires_in_s: float, content_type: str) -> str:
        # The route serves the type stored by put_file, the one the caller passes here.
        validate_key(key)
        expires = math.ceil(self._clock() + expires_in_s)
        return (
            f"{self._public_url}{LINK_PATH}{quote(key)}"
            f"?expires={expires}&signature={self._sign(key, expires)}"
        )

    async def exists(self, key: str) -> bool:
        return await exists(self._store, key)

    async def resolve(self, key: str, expires: int, signature: str) -> LocalFile:
        """The file a link names: InvalidLink for a bad key or signature, ExpiredLink past
        its expiry, BlobNotFound when the object is gone (deleted by retention)."""
        try:
            validate_key(key)
        except InvalidKey:
            raise InvalidLink() from None
        if not hmac.compare_digest(self._sign(key, expires), signature.lower()):
            raise InvalidLink()
        if self._clock() >= expires:
            raise ExpiredLink()
        return await asyncio.to_thread(self._stat, key)

    def _stat(self, key: str) -> LocalFile:
        path = self._root / key
        try:
            size = path.stat().st_size
            content_type = (self._root / self._type_key(key)).read_text().strip()
        except FileNotFoundError:
            raise BlobNotFound(f"get {key}: not found") from None
        except OSError as exc:
            raise BlobError(f"get {key}: {exc.strerror}", "other") from exc
        return LocalFile(path, content_type or "application/octet-stream", size)

    def _sign(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self._link_key, message, hashlib.sha256).hexdigest()

    @staticmethod
    def _type_key(key: str) -> str:
        return f"{TYPES_FOLDER}/{key}"
