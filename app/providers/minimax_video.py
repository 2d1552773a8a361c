"""MiniMax video generation: query the task, and on success resolve its file_id via File
Retrieve into the MP4's download URL.

The facts relied on here, with their sources, are in docs/providers.md ("MiniMax video
generation"). Same host, key and File Retrieve as T2A async: the poll is MiniMax's shared
one (app/providers/minimax_common.py); this module adds the route, the ids, the video's
size and the callback's task id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.core.config import ProviderKind
from app.core.logging import get_logger
from app.providers.base import CallbackSigning, ProviderResult, ResultFile
from app.providers.external_ids import InvalidExternalId, int64_id
from app.providers.http import clip
from app.providers.minimax_common import MinimaxAsyncAdapter, RetrievedFile

QUERY_PATH = "/v1/query/video_generation"
# Far beyond any resolution MiniMax offers (1080P is 1920 x 1080): anything larger is noise.
MAX_DIMENSION = 100_000
_DIMENSIONS = ("video_width", "video_height")

logger = get_logger(__name__)


class MinimaxVideoResult(ProviderResult):
    """A finished MiniMax video generation task: its MP4 and a link to download it."""

    kind: Literal["minimax_video"] = Field(description="The provider kind.")
    file_id: str = Field(
        description="MiniMax's file_id of the video (a 64-bit integer, as a decimal "
        "string). File Retrieve gives a fresh download_url for it while MiniMax keeps it.",
        examples=["361721749176519"],
    )
    download_url: str = Field(description="A signed link to the generated video, an MP4 file.")
    download_url_expires_at: datetime = Field(
        description="When download_url stops working: 9 hours after pollhook retrieved "
        "it (MiniMax's documented lifetime), or earlier if the URL's own expiry "
        "(`Expires=`, or `X-Amz-Date` + `X-Amz-Expires`) says so."
    )
    filename: str | None = Field(
        None,
        description="The file name as MiniMax gives it (seen: `output.mp4`); null when "
        "MiniMax gives none, or one that is not a plain file name.",
        examples=["output.mp4"],
    )
    video_width: int | None = Field(
        None,
        description="The video's width in pixels, as the query reported it on success; "
        "null when it reported none.",
        examples=[1280],
    )
    video_height: int | None = Field(
        None,
        description="The video's height in pixels, as the query reported it on success; "
        "null when it reported none.",
        examples=[720],
    )


class MinimaxVideoAdapter(MinimaxAsyncAdapter):
    kind: ProviderKind = ProviderKind.MINIMAX_VIDEO
    query_path = QUERY_PATH

    def normalize_id(self, raw: object) -> str:
        # The schema says string, but every id MiniMax shows (create, query, callback) is a
        # decimal int64 ("106916112212032", "115334141465231360"): checked as one, so a
        # typo fails at registration rather than as 2013 at the first poll.
        return int64_id(raw)

    # The create request's callback_url: MiniMax first POSTs {"challenge": ...}, which must
    # be echoed within 3 s, then unsigned status updates shaped like the query's answer.
    callbacks: CallbackSigning = CallbackSigning.TOKEN

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        # The challenge names no task; a status update names it in task_id.
        try:
            return int64_id(body.get("task_id"))
        except InvalidExternalId:
            return None

    def details(self, query: dict[str, Any]) -> dict[str, Any]:
        return {name: size for name in _DIMENSIONS if (size := _dimension(query, name))}

    def result(self, file: RetrievedFile, details: dict[str, Any]) -> MinimaxVideoResult:
        return MinimaxVideoResult(
            kind="minimax_video",
            file_id=file.file_id,
            download_url=file.download_url,
            download_url_expires_at=file.expires_at,
            filename=file.filename,
            video_width=_dimension(details, "video_width"),
            video_height=_dimension(details, "video_height"),
        )

    def result_files(self, result: ProviderResult, received_at: datetime) -> list[ResultFile]:
        assert isinstance(result, MinimaxVideoResult)
        return [ResultFile("video", result.download_url, result.download_url_expires_at)]


def _dimension(source: dict[str, Any], name: str) -> int | None:
    """A width or height in pixels. A size is informational: one that is not a positive
    whole number is dropped with a log line instead of holding back the video. 0 and
    absence say the same (no size reported)."""
    value = source.get(name)
    if value in (None, 0):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_DIMENSION:
        return value
    logger.warning("provider.bad_dimension", field=name, value=clip(str(value)))
    return None
