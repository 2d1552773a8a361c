"""The archive worker's retention and the links it hands out, on a real Postgres and a real
local store: files deleted when their time is up, the task then showing them gone; a link
minted per showing, so one handed out later lives later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.archive.service import TryResult
from app.archive.worker import ArchiveWorker
from app.blobs.local import LocalBlobStore
from app.blobs.views import ArchiveLinks
from app.core.config import Settings
from app.models import ArchiveJob, Task
from tests.archive.jobs import FILE, record, succeed


def local_store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "archive", public_url="http://127.0.0.1:1", link_key=b"k" * 32)


async def test_retention_deletes_the_files_and_the_task_says_so(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    job = await succeed(client, engine, wait_s=60)
    source = tmp_path / "audio.mp3"
    source.write_bytes(b"ID3 audio")
    key = f"acme/{job.id}/content-1.mp3"
    await store.put_file(key, source, content_type="audio/mpeg")
    await record(engine, settings, job, TryResult([{**FILE, "key": key}], None))
    worker = ArchiveWorker(settings, engine, "a1", store)
    assert await worker.purge() == 0  # kept for RETENTION_DAYS
    assert await store.exists(key)
    async with engine.begin() as conn:
        await conn.execute(
            update(ArchiveJob).values(purge_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    assert await worker.purge() == 1

    assert not await store.exists(key)
    async with engine.connect() as conn:
        archive = await conn.scalar(select(Task.archive))
        job_row = (await conn.execute(select(ArchiveJob.status, ArchiveJob.purge_at))).one()
    assert archive is not None
    assert archive["status"] == "deleted"
    assert archive["deleted_at"] is not None
    assert job_row.status == "purged"
    assert job_row.purge_at is None
    assert await worker.purge() == 0  # once
    files = await ArchiveLinks(store, link_ttl_s=60).files(archive, datetime.now(UTC))
    assert files is not None
    assert [(f.name, f.url) for f in files] == [(FILE["name"], None)]
    shown = (await client.get(f"/v1/tasks/{job.id}")).json()
    assert shown["archive"]["status"] == "deleted"
    await worker.stop()


async def test_a_link_is_minted_each_time_the_task_is_shown(tmp_path: Path) -> None:
    """A webhook retried later, or a GET later, carries a link that lives from then."""
    clock = [1_800_000_000.0]
    store = LocalBlobStore(
        tmp_path / "archive",
        public_url="http://127.0.0.1:1",
        link_key=b"k" * 32,
        clock=lambda: clock[0],
    )
    links = ArchiveLinks(store, link_ttl_s=3600)
    stored = {
        "status": "archived",
        "attempts": 1,
        "files": [{k: v for k, v in FILE.items() if k != "source"}],
    }
    result: dict[str, Any] = {"kind": "minimax_t2a", "archive": None}
    snapshot: dict[str, Any] = {"id": "t", "status": "succeeded", "archive": None, "result": result}

    first = await links.into_snapshot(snapshot, stored, datetime.now(UTC))
    clock[0] += 86_400  # a day later
    later = await links.into_snapshot(snapshot, stored, datetime.now(UTC))

    [early_file] = first["result"]["archive"]
    [late_file] = later["result"]["archive"]
    assert early_file["url"] != late_file["url"]
    assert "expires=1800003600" in early_file["url"]
    assert "expires=1800090000" in late_file["url"]
    assert first["archive"]["status"] == "archived"
    assert result["archive"] is None  # the stored event is left as it was
    processing = {"id": "t", "status": "processing", "archive": None, "result": None}
    assert await links.into_snapshot(processing, stored, datetime.now(UTC)) == processing
