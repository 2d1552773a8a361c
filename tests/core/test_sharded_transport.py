"""ShardedTransport: the connections asked for, spread over small pools, requests taken in
first pool first (app/core/http_client.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.core.http_client import SHARD_CONNECTIONS, ShardedTransport


@pytest.mark.parametrize(
    ("connections", "shards", "per_shard"),
    [(1, 1, 1), (SHARD_CONNECTIONS, 1, SHARD_CONNECTIONS), (20, 3, 7), (64, 8, 8), (100, 13, 8)],
)
def test_shards_hold_at_least_the_connections_asked_for(
    connections: int, shards: int, per_shard: int
) -> None:
    made: list[httpx.Limits] = []

    def make(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
        made.append(limits)
        return httpx.MockTransport(lambda _: httpx.Response(200))

    ShardedTransport(connections, make)
    assert len(made) == shards
    assert {(m.max_connections, m.max_keepalive_connections) for m in made} == {
        (per_shard, per_shard)
    }
    assert shards * per_shard >= connections


class _Body(httpx.AsyncByteStream):
    """A streamed body, as a real connection gives: the response stays open until closed."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.text.encode()


def _counting(served: list[int], made: list[int]) -> Any:
    def make(_: httpx.Limits) -> httpx.AsyncBaseTransport:
        shard = len(made)
        made.append(shard)

        def handler(request: httpx.Request) -> httpx.Response:
            served.append(shard)
            return httpx.Response(200, stream=_Body(request.url.path))

        return httpx.MockTransport(handler)

    return make


async def test_one_request_at_a_time_stays_on_the_first_shard() -> None:
    served: list[int] = []
    made: list[int] = []
    async with httpx.AsyncClient(transport=ShardedTransport(24, _counting(served, made))) as http:
        for n in range(5):
            assert (await http.get(f"http://127.0.0.1:9/{n}")).text == f"/{n}"
    assert (made, served) == ([0, 1, 2], [0] * 5)


async def test_requests_fill_a_shard_before_the_next_and_free_it_when_closed() -> None:
    served: list[int] = []
    transport = ShardedTransport(24, _counting(served, []))
    async with httpx.AsyncClient(transport=transport) as http, contextlib.AsyncExitStack() as open_:
        for n in range(transport.per_shard + 2):
            await open_.enter_async_context(http.stream("GET", f"http://127.0.0.1:9/{n}"))
        assert served == [0] * transport.per_shard + [1, 1]
        assert transport.busy == [transport.per_shard, 2, 0]
    assert transport.busy == [0, 0, 0]
    async with httpx.AsyncClient(transport=transport) as http:
        await http.get("http://127.0.0.1:9/again")
    assert served[-1] == 0


async def test_a_failed_request_frees_its_place() -> None:
    def make(_: httpx.Limits) -> httpx.AsyncBaseTransport:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        return httpx.MockTransport(refuse)

    transport = ShardedTransport(8, make)
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://127.0.0.1:9/")
    assert transport.busy == [0]


async def test_a_real_server_is_reached_through_every_shard() -> None:
    """Each shard is a real httpx pool: its connections are opened once and reused."""
    peers: set[int] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.add(writer.get_extra_info("peername")[1])
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while await reader.readuntil(b"\r\n\r\n"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=ShardedTransport(2 * SHARD_CONNECTIONS)) as client:
            for _ in range(6):  # one at a time: one connection, reused
                assert (await client.get(f"http://127.0.0.1:{port}/")).text == "ok"
            held = [
                await client.send(
                    client.build_request("GET", f"http://127.0.0.1:{port}/"), stream=True
                )
                for _ in range(SHARD_CONNECTIONS + 1)
            ]
            for response in held:
                await response.aclose()
        # The first shard's connections, then one of the second's.
        assert len(peers) == SHARD_CONNECTIONS + 1
    finally:
        server.close()
        await server.wait_closed()
