"""What consumers are shown of a stored archive: whatever an older version wrote, and
whatever the store does, a task stays readable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.blobs.base import BlobError
from app.blobs.views import ArchiveLinks, ArchiveStatus

FILE = {
    "kind": "audio",
    "name": "a.mp3",
    "key": "acme/t/a.mp3",
    "sha256": "0" * 64,
    "bytes": 3,
    "content_type": "audio/mpeg",
}
NOW = datetime(2026, 12, 4, tzinfo=UTC)


class Signer:
    def __init__(self, fails: bool = False) -> None:
        self.fails = fails

    async def link(self, key: str, *, expires_in_s: float, content_type: str) -> str:
        if self.fails:
            raise BlobError("no credentials", "denied")
        return f"https://store.test/{key}?ttl={expires_in_s:g}"


@pytest.mark.parametrize(
    ("stored", "status"),
    [
        (None, None),
        ({}, None),
        ({"status": "archived", "attempts": 1, "files": [FILE]}, ArchiveStatus.ARCHIVED),
        ({"status": "pending"}, ArchiveStatus.PENDING),
        # Shapes this version cannot read: shown as no state, not a 500.
        ({"status": "archiving"}, None),
        ({"status": "archived", "attempts": "x"}, None),
    ],
)
def test_state(stored: dict[str, Any] | None, status: ArchiveStatus | None) -> None:
    state = ArchiveLinks.state(stored)
    assert (state.status if state else None) == status


async def test_files_get_links_and_unreadable_entries_are_left_out() -> None:
    stored = {"status": "archived", "files": [FILE, {"kind": "audio"}, "x", {**FILE, "bytes": "3"}]}

    files = await ArchiveLinks(Signer(), link_ttl_s=60).files(stored, NOW)

    assert files is not None
    assert [(f.name, f.url) for f in files] == [("a.mp3", "https://store.test/acme/t/a.mp3?ttl=60")]
    assert files[0].url_expires_at == datetime(2026, 12, 4, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("links", "status"),
    [
        # The store cannot sign now: the file is shown without a link.
        (ArchiveLinks(Signer(fails=True), link_ttl_s=60), "archived"),
        # The archive was turned off since: the files are listed, without links.
        (ArchiveLinks(None, link_ttl_s=60), "archived"),
        # Retention deleted them.
        (ArchiveLinks(Signer(), link_ttl_s=60), "deleted"),
    ],
)
async def test_files_without_links(links: ArchiveLinks, status: str) -> None:
    files = await links.files({"status": status, "files": [FILE]}, NOW)

    assert files is not None
    assert [(f.name, f.url, f.url_expires_at) for f in files] == [("a.mp3", None, None)]
