"""GET /v1/archive/files/{key}: the download route of a file:// archive's links.

Mounted only when the archive is a folder (app.main). It takes no API key: the link's
signature is the credential (app/blobs/local.py), so whoever holds a link may download that
one file until it expires.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from app.blobs.base import BlobNotFound
from app.blobs.local import LINK_PATH, ExpiredLink, InvalidLink, LocalBlobStore
from app.core.errors import Forbidden, NotFound
from app.core.schemas import error_responses


def archive_files_router(store: LocalBlobStore) -> APIRouter:
    router = APIRouter(tags=["archive"])

    @router.get(
        LINK_PATH + "{key:path}",
        summary="Download an archived result file",
        response_class=FileResponse,
        responses={
            200: {"description": "The file, with its content type", "content": {"*/*": {}}},
            **error_responses(403, 404, 422),
        },
        # No bearer token: the signed link is the credential (PollhookAPI.openapi keeps it).
        openapi_extra={"security": []},
    )
    async def get_archive_file(
        key: str,
        expires: Annotated[int, Query(ge=0, le=2**40, description="Unix seconds")],
        signature: Annotated[str, Query(pattern="^[0-9a-f]{64}$", description="From the link")],
    ) -> FileResponse:
        try:
            found = await store.resolve(key, expires, signature)
        except InvalidLink:
            raise Forbidden("this link is not valid", details={"reason": "invalid"}) from None
        except ExpiredLink:
            raise Forbidden("this link has expired", details={"reason": "expired"}) from None
        except BlobNotFound:
            raise NotFound("this file is no longer archived") from None
        # The bytes came from upstream and are served from pollhook's own origin: never
        # as a page the browser would run (its type is one of naming.py's, and these
        # headers hold whatever a browser would sniff).
        return FileResponse(
            found.path,
            media_type=found.content_type,
            headers={
                "Cache-Control": "private, no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox",
            },
        )

    return router
