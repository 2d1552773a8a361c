"""The BlobStore the settings name."""

from __future__ import annotations

from typing import assert_never

from app.blobs.base import BlobStore
from app.blobs.local import LocalBlobStore, load_link_key
from app.blobs.s3 import S3BlobStore
from app.core.config import FileArchive, S3Archive, Settings


def open_store(settings: Settings) -> BlobStore | None:
    """The archive's store, None while the archive is off. A file:// archive creates its
    folder (and link key) here, so a start with an unwritable folder fails at once."""
    target = settings.archive_target
    archive = settings.archive
    match target:
        case None:
            return None
        case FileArchive(root=root):
            secret = archive.link_secret
            return LocalBlobStore(
                root,
                public_url=settings.resolved_public_url,
                link_key=secret.get_secret_value().encode() if secret else load_link_key(root),
            )
        case S3Archive(bucket=bucket, prefix=prefix):
            secret_key = archive.secret_access_key
            return S3BlobStore(
                bucket=bucket,
                prefix=prefix,
                endpoint_url=archive.endpoint_url,
                region=archive.region,
                access_key_id=archive.access_key_id,
                secret_access_key=secret_key.get_secret_value() if secret_key else None,
            )
        case _:
            assert_never(target)
