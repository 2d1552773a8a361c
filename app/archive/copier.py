"""One result file copied into the archive: downloaded through the SSRF guard into a spool
file (never whole in memory, never past the size cap, hashed on the way), a bundle unpacked
into its members, each uploaded to the store from its spool file.

The spool is a folder on local disk that lives for one copy: the store reads each file
from there in parts (multipart for large ones), so memory stays flat whatever the size.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import tarfile
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from app.archive.naming import (
    content_type,
    member_kind,
    object_key,
    safe_name,
    unique_name,
    url_name,
)
from app.archive.retries import Reason
from app.blobs.base import BlobError, BlobStore
from app.blobs.views import StoredFile
from app.core.netguard import BlockedAddress, InvalidUrl, refusal_in

CHUNK = 256 * 1024
# A bundle with more members than this is not a provider's result (MiniMax's has three),
# nor one with more entries of any kind, or a metadata entry over MAX_META_BYTES.
MAX_MEMBERS = 64
MAX_HEADERS = 256
MAX_META_BYTES = 64 * 1024
TAR_BLOCK = 512
META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
# Redirects a result URL may take to its file (a CDN's hop or two).
MAX_REDIRECTS = 5


class CopyError(Exception):
    """A copy that failed, with the reason its retry policy goes by."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Source:
    """A file to copy, as the adapter named it (`ResultFile`), stored with the job."""

    kind: str
    url: str

    @property
    def bundle(self) -> bool:
        return self.kind == "bundle"


@dataclass(frozen=True)
class Spooled:
    name: str
    kind: str
    path: Path
    sha256: str
    size: int
    content_type: str


class Copier:
    def __init__(self, client: httpx.AsyncClient, store: BlobStore, *, max_bytes: int) -> None:
        self.client = client
        self.store = store
        self.max_bytes = max_bytes

    async def copy(
        self, tenant: str, task_id: uuid.UUID, source: Source, taken: set[str]
    ) -> list[StoredFile]:
        """Copy one source (a bundle: each of its members) into the store, its files named
        apart from those in `taken` (which gains them). Raises CopyError."""
        # Made and removed in a thread: unlinking a large spooled file blocks for a while.
        spool = Path(
            await asyncio.to_thread(
                tempfile.mkdtemp, prefix="pollhook-archive-", dir=self.store.spool_dir()
            )
        )
        try:
            fetched = await self._fetch(source, spool / "download")
            if source.bundle:
                files = await asyncio.to_thread(_unpack, fetched.path, spool, self.max_bytes)
            else:
                files = [fetched]
            stored: list[StoredFile] = []
            for file in files:
                name = unique_name(file.name, taken)
                key = object_key(tenant, task_id, name)
                try:
                    await self.store.put_file(key, file.path, content_type=file.content_type)
                except BlobError as exc:
                    # A source is recorded whole or not at all: what this try stored of it
                    # goes, or retention would never find it.
                    with contextlib.suppress(BlobError):
                        await self.store.delete([f["key"] for f in stored])
                    raise CopyError(Reason.STORE, f"the archive's store failed: {exc}") from exc
                taken.add(name)
                stored.append(
                    StoredFile(
                        kind=file.kind,
                        name=name,
                        key=key,
                        sha256=file.sha256,
                        bytes=file.size,
                        content_type=file.content_type,
                    )
                )
            return stored
        finally:
            await asyncio.to_thread(shutil.rmtree, spool, True)

    async def _fetch(self, source: Source, path: Path) -> Spooled:
        name = url_name(source.url, source.kind)
        try:
            async with self.client.stream("GET", source.url, follow_redirects=True) as response:
                if response.status_code != 200:
                    raise CopyError(
                        Reason.HTTP_ERROR, f"the provider answered HTTP {response.status_code}"
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise _too_large(self.max_bytes, f"{declared} bytes announced")
                digest, size = hashlib.sha256(), 0
                with path.open("wb") as out:
                    async for chunk in response.aiter_bytes(CHUNK):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise _too_large(self.max_bytes, "more bytes sent")
                        digest.update(chunk)
                        out.write(chunk)
                declared_type = response.headers.get("content-type")
        except CopyError:
            raise
        except (BlockedAddress, InvalidUrl) as exc:
            raise CopyError(Reason.REFUSED, f"refused: {exc}") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise CopyError(Reason.REFUSED, f"refused: not an http(s) URL ({exc})"[:300]) from None
        except httpx.TooManyRedirects:
            raise CopyError(Reason.HTTP_ERROR, "too many redirects") from None
        except httpx.HTTPError as exc:
            blocked = refusal_in(exc)
            if blocked is not None:
                raise CopyError(Reason.REFUSED, f"refused: {blocked}") from None
            raise CopyError(Reason.UNREACHABLE, f"{type(exc).__name__}: {exc}"[:300]) from None
        except OSError as exc:
            blocked = refusal_in(exc)
            if blocked is not None:
                raise CopyError(Reason.REFUSED, f"refused: {blocked}") from None
            raise CopyError(Reason.INTERNAL, f"spooling the download failed: {exc}"[:300]) from None
        return Spooled(
            name=name,
            kind=source.kind,
            path=path,
            sha256=digest.hexdigest(),
            size=size,
            content_type=content_type(name, declared_type),
        )


def _too_large(cap: int, what: str) -> CopyError:
    return CopyError(Reason.TOO_LARGE, f"over the archive's cap of {cap} bytes ({what})")


def _check_headers(bundle: Path) -> None:
    """Walk the tar's headers before tarfile reads it: at most MAX_HEADERS of them, and no
    metadata entry (pax, GNU long name) over MAX_META_BYTES, which tarfile would read whole
    into memory."""
    length = bundle.stat().st_size
    with bundle.open("rb") as tar:
        for _ in range(MAX_HEADERS + 1):
            header = tar.read(TAR_BLOCK)
            if len(header) < TAR_BLOCK or header == bytes(TAR_BLOCK):
                return  # the end, or a short file tarfile will call unreadable
            size = _entry_size(header[124:136])
            if size is None or size > length:
                return  # not a tar header: tarfile says what is wrong
            if header[156:157] in META_TYPES and size > MAX_META_BYTES:
                raise CopyError(Reason.BAD_BUNDLE, f"a {size}-byte metadata entry")
            tar.seek(-(-size // TAR_BLOCK) * TAR_BLOCK, 1)
    raise CopyError(Reason.BAD_BUNDLE, f"more than {MAX_HEADERS} entries")


def _entry_size(field: bytes) -> int | None:
    """A tar header's size field: octal digits, or GNU's base-256 for large sizes."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits or b"0", 8)
    except ValueError:
        return None


def _unpack(bundle: Path, spool: Path, max_bytes: int) -> list[Spooled]:
    """The bundle's regular files, each spooled and hashed; links, folders and devices are
    skipped, and a member's own path is cut to its base name (it comes from upstream).
    A plain tar only, as MiniMax ships it: a compressed one could inflate without bound."""
    files: list[Spooled] = []
    total = 0
    try:
        _check_headers(bundle)
        with tarfile.open(bundle, "r:") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                if len(files) >= MAX_MEMBERS:
                    raise CopyError(Reason.BAD_BUNDLE, f"more than {MAX_MEMBERS} files")
                total += member.size
                if member.size > max_bytes or total > max_bytes:
                    raise _too_large(max_bytes, f"member {member.name[:100]!r}")
                source = tar.extractfile(member)
                if source is None:
                    continue
                name = safe_name(member.name, f"member-{len(files) + 1}")
                path = spool / f"member-{len(files)}"
                digest, size = _copy_out(source, path)
                files.append(
                    Spooled(name, member_kind(name), path, digest, size, content_type(name, None))
                )
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise CopyError(Reason.BAD_BUNDLE, f"not a readable tar archive: {exc}"[:300]) from None
    except OSError as exc:
        # The spool's disk, not the bundle: worth another try.
        raise CopyError(Reason.INTERNAL, f"spooling the bundle failed: {exc}"[:300]) from None
    if not files:
        raise CopyError(Reason.BAD_BUNDLE, "the archive holds no files")
    return files


def _copy_out(source: IO[bytes], path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with source, path.open("wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return digest.hexdigest(), size
