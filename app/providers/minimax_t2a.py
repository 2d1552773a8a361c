"""MiniMax T2A async: query the task, and on success resolve its file_id via File Retrieve.

The facts relied on here, with their sources, are in docs/providers.md ("MiniMax T2A
async"). The poll, the base_resp classification, File Retrieve and the checkpoint that
resumes it are MiniMax's own and shared with its video API (app/providers/minimax_common.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.core.config import ProviderKind
from app.providers.base import CallbackSigning, ProviderResult, ResultFile
from app.providers.external_ids import int64_id
from app.providers.minimax_common import RETRIEVE_PATH as RETRIEVE_PATH
from app.providers.minimax_common import MinimaxAsyncAdapter, RetrievedFile

QUERY_PATH = "/v1/query/t2a_async_query_v2"


class MinimaxT2AResult(ProviderResult):
    """A finished MiniMax T2A async task: its file and a link to download it."""

    kind: Literal["minimax_t2a"] = Field(description="The provider kind.")
    file_id: str = Field(
        description="MiniMax's file_id (a 64-bit integer, as a decimal string). File "
        "Retrieve gives a fresh download_url for it while MiniMax keeps the file.",
        examples=["95157322514496"],
    )
    download_url: str = Field(
        description="A signed link to the result: a tar archive holding the audio, its "
        "sentence timings (`.titles`) and metadata (`.extra`), not a bare audio file."
    )
    download_url_expires_at: datetime = Field(
        description="When download_url stops working: 9 hours after pollhook retrieved "
        "it (MiniMax's documented lifetime), or earlier if the URL's own expiry "
        "(`Expires=`, or `X-Amz-Date` + `X-Amz-Expires`) says so."
    )
    filename: str | None = Field(
        None,
        description="The archive's file name as MiniMax gives it (e.g. "
        "`95157322514496.tar`); null when MiniMax gives none, or one that is not a plain "
        "file name.",
        examples=["95157322514496.tar"],
    )


class MinimaxT2AAdapter(MinimaxAsyncAdapter):
    kind: ProviderKind = ProviderKind.MINIMAX_T2A
    query_path = QUERY_PATH

    def normalize_id(self, raw: object) -> str:
        # MiniMax task ids are int64 in its schema; clients send them as numbers or strings.
        return int64_id(raw)

    # T2A async takes no callback URL (its create request has none: docs/providers.md).
    callbacks: CallbackSigning = CallbackSigning.NONE

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        return None

    def result(self, file: RetrievedFile, details: dict[str, Any]) -> MinimaxT2AResult:
        return MinimaxT2AResult(
            kind="minimax_t2a",
            file_id=file.file_id,
            download_url=file.download_url,
            download_url_expires_at=file.expires_at,
            filename=file.filename,
        )

    def result_files(self, result: ProviderResult, received_at: datetime) -> list[ResultFile]:
        # One tar holding the audio, its `.titles` and `.extra`: the archive unpacks it.
        assert isinstance(result, MinimaxT2AResult)
        return [ResultFile("bundle", result.download_url, result.download_url_expires_at)]
