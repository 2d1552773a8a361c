"""What consumers are shown of a task's archive: each file with a link minted when it is
shown, and the archive's state.

The task row keeps the archive as stored (`tasks.archive`: each file's key, never a URL);
a link is made from the key at the moment the task is shown, by `GET /v1/tasks/{id}` or a
webhook attempt, so a link handed out a day after the task finished still works for
`link_ttl_s` from then.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.blobs.base import BlobError
from app.core.logging import get_logger

logger = get_logger(__name__)


class ArchiveStatus(StrEnum):
    PENDING = "pending"
    ARCHIVED = "archived"
    FAILED = "failed"
    DELETED = "deleted"


class StoredFile(TypedDict):
    """One archived file as `tasks.archive` keeps it."""

    kind: str
    name: str
    key: str
    sha256: str
    bytes: int
    content_type: str


class ArchivedFile(BaseModel):
    """One file of the result, copied into pollhook's archive."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(
        description="`audio`, `subtitle` or `extra` (a provider's metadata file, such as "
        "MiniMax's `.extra`)."
    )
    name: str = Field(description="The file's name, as the provider named it.")
    url: str | None = Field(
        description="A link to download it, made when this was shown: valid until "
        "`url_expires_at`, without credentials. Null once retention deleted the file."
    )
    url_expires_at: datetime | None
    sha256: str = Field(description="Of the bytes, hex: what the provider served.")
    bytes: int
    content_type: str


class ArchiveError(BaseModel):
    reason: str = Field(
        description="`refused` (the URL points at an address pollhook may not reach), "
        "`too_large`, `expired` (the provider's URL died before the copy finished), "
        "`http_error`, `unreachable`, `bad_bundle` (an archive that could not be read) or "
        "`store` (the archive's storage failed)."
    )
    message: str
    at: datetime


class ArchiveState(BaseModel):
    """Where the copy of the task's result files stands."""

    model_config = ConfigDict(frozen=True)

    status: ArchiveStatus = Field(
        description="`pending` (copying, or retrying), `archived` (every file is in "
        "`result.archive`), `failed` (given up; `error` says why, and `result.archive` "
        "holds what was copied before) or `deleted` (retention removed the files)."
    )
    attempts: int
    error: ArchiveError | None
    archived_at: datetime | None
    deleted_at: datetime | None


class Linker(Protocol):
    """What makes a consumer's link to a stored key (a `BlobStore`)."""

    async def link(self, key: str, *, expires_in_s: float, content_type: str) -> str: ...


class ArchiveLinks:
    """Turns a task's stored archive into what consumers see, links minted now.

    `store` is None when the archive is off: a task archived while it was on still shows
    its files and state, without links."""

    def __init__(self, store: Linker | None, *, link_ttl_s: float) -> None:
        self.store = store
        self.link_ttl_s = link_ttl_s

    async def files(
        self, stored: dict[str, Any] | None, now: datetime
    ) -> list[ArchivedFile] | None:
        if not stored:
            return None
        live = stored.get("status") != ArchiveStatus.DELETED and self.store is not None
        shown = []
        for entry in _readable(stored.get("files")):
            url = None
            if live and self.store is not None:
                try:
                    url = await self.store.link(
                        entry["key"],
                        expires_in_s=self.link_ttl_s,
                        content_type=entry["content_type"],
                    )
                except BlobError as exc:
                    # A link the store cannot sign now (its credentials, say) is shown as
                    # none: the task and the webhook still go out, the next showing tries
                    # again.
                    logger.warning("archive_link_failed", reason=exc.reason, key=entry["key"])
            shown.append(
                ArchivedFile(
                    kind=entry["kind"],
                    name=entry["name"],
                    url=url,
                    url_expires_at=now + timedelta(seconds=self.link_ttl_s) if url else None,
                    sha256=entry["sha256"],
                    bytes=entry["bytes"],
                    content_type=entry["content_type"],
                )
            )
        return shown

    @staticmethod
    def state(stored: dict[str, Any] | None) -> ArchiveState | None:
        """None, not a 500, for a shape this version cannot read: a task stays readable
        whatever an older version wrote."""
        if not stored:
            return None
        try:
            return ArchiveState.model_validate(
                {key: stored.get(key) for key in ArchiveState.model_fields}
                | {"attempts": stored.get("attempts") or 0}
            )
        except ValidationError:
            logger.warning("archive_state_unreadable")
            return None

    async def into_snapshot(
        self, data: dict[str, Any], stored: dict[str, Any] | None, now: datetime
    ) -> dict[str, Any]:
        """A task snapshot as JSON (a webhook's `data`) showing the archive as `stored`
        holds it now: its state in `archive`, its files in `result.archive`. Only a
        succeeded task's: an earlier event (`task.processing`) retried later stays as it was."""
        if not stored or data.get("status") != "succeeded":
            return data
        state = self.state(stored)
        files = await self.files(stored, now)
        shown = {**data, "archive": state.model_dump(mode="json") if state else None}
        result = data.get("result")
        if isinstance(result, dict) and files is not None:
            shown["result"] = {**result, "archive": [f.model_dump(mode="json") for f in files]}
        return shown


def _readable(files: Any) -> list[StoredFile]:
    """The stored files this version can read (each with every field, of its type)."""
    if not isinstance(files, list):
        return []
    kinds = {"kind": str, "name": str, "key": str, "sha256": str, "bytes": int, "content_type": str}
    return [
        cast(StoredFile, entry)
        for entry in files
        if isinstance(entry, dict)
        and all(isinstance(entry.get(name), kind) for name, kind in kinds.items())
    ]
