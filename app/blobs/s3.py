"""BlobStore on an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, R2, GCS interop)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import obstore
from obstore.store import S3Store

from app.blobs.base import validate_key
from app.blobs.obstore_calls import exists, translated, upload

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

# The archive retries a failed copy on its own schedule (ArchiveSettings.retry_base_s), so
# one call gives up within seconds rather than object_store's default of three minutes.
RETRY: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=20),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=5),
        "base": 2,
    },
}
CONNECT_TIMEOUT = timedelta(seconds=5)
# Per request; a part of a multipart upload is one request.
REQUEST_TIMEOUT = timedelta(seconds=120)


class S3BlobStore:
    backend: ClassVar[str] = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        endpoint_url: str | None,
        region: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
    ) -> None:
        config: S3Config = {}
        if endpoint_url is not None:
            config["endpoint"] = endpoint_url
            # A custom endpoint (MinIO, SeaweedFS, R2) is addressed by path: the bucket
            # need not resolve as a host name.
            config["virtual_hosted_style_request"] = False
        if region is not None:
            config["region"] = region
        if access_key_id is not None and secret_access_key is not None:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        client: ClientConfig = {
            "allow_http": endpoint_url is not None and endpoint_url.startswith("http://"),
            "connect_timeout": CONNECT_TIMEOUT,
            "timeout": REQUEST_TIMEOUT,
        }
        self._store = S3Store(
            bucket,
            prefix=prefix or None,
            config=config,
            client_options=client,
            retry_config=RETRY,
        )

    def spool_dir(self) -> Path | None:
        return None  # the upload reads the file over the network anyway

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        validate_key(key)
        await upload(self._store, key, path, attributes={"Content-Type": content_type})

    async def delete(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        for key in keys:
            validate_key(key)
        # S3 deletes a missing key without complaint; this is one bulk request per 1,000.
        with translated("delete", keys[0]):
            await obstore.delete_async(self._store, list(keys))

    async def link(self, key: str, *, expires_in_s: float, content_type: str) -> str:
        # The object was stored with its Content-Type, which S3 serves to the URL's GET.
        validate_key(key)
        with translated("sign", key):
            return await obstore.sign_async(
                self._store, "GET", key, timedelta(seconds=expires_in_s)
            )

    async def exists(self, key: str) -> bool:
        return await exists(self._store, key)
