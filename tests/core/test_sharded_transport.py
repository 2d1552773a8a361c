"""ShardedTransport: the connections asked for, spread over small pools, requests taken in
turn (app/core/http_client.py)."""

from __future__ import annotations

import asyncio
import contextlib

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


async def test_requests_take_the_shards_in_turn() -> None:
    served: list[int] = []

    def make(_: httpx.Limits) -> httpx.AsyncBaseTransport:
        shard = len(made)

        def handler(request: httpx.Request) -> httpx.Response:
            served.append(shard)
            return httpx.Response(200, text=request.url.path)

        made.append(shard)
        return httpx.MockTransport(handler)

    made: list[int] = []
    async with httpx.AsyncClient(transport=ShardedTransport(24, make)) as client:
        for n in range(7):
            assert (await client.get(f"http://127.0.0.1:9/{n}")).text == f"/{n}"
    assert served == [0, 1, 2, 0, 1, 2, 0]


async def test_a_real_server_is_reached_through_every_shard() -> None:
    """Each shard is a real httpx pool: connections are opened and reused per shard."""
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
            for _ in range(6):  # one at a time: each shard opens one connection, then reuses it
                assert (await client.get(f"http://127.0.0.1:{port}/")).text == "ok"
        assert len(peers) == 2
    finally:
        server.close()
        await server.wait_closed()
