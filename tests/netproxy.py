"""Take the database away from real processes: a `TcpProxy` in front of Postgres, on a thread
of its own so that blocking test code (process start-up waits, the sync sandbox client) never
stalls the forwarding."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.engine import URL, make_url

from tests.helpers import TcpProxy


def proxy_to(database_url: str) -> TcpProxy:
    """A (not yet started) proxy to the server of `database_url`, over TCP or its unix socket."""
    url = make_url(database_url)
    query = dict(url.query)
    socket_dir = query.get("host")
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        return TcpProxy("", None, unix_path=f"{socket_dir}/.s.PGSQL.{query.get('port', 5432)}")
    return TcpProxy(url.host or "127.0.0.1", url.port or 5432)


def through(database_url: str, proxy: TcpProxy) -> URL:
    """`database_url`, pointed at the proxy instead of the server."""
    return make_url(database_url).set(host="127.0.0.1", port=proxy.port, query={})


class ThreadedProxy:
    """A database proxy that can be cut (connections refused, open ones dropped) and restored
    on the same port, from sync or async test code."""

    def __init__(self, database_url: str) -> None:
        self.proxy = proxy_to(database_url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="db-proxy", daemon=True)
        self._thread.start()
        self._call(self.proxy.start())
        self.url = through(database_url, self.proxy).render_as_string(hide_password=False)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    @property
    def up(self) -> bool:
        return self.proxy.server is not None

    def cut(self) -> None:
        self._call(self.proxy.cut())

    def restore(self) -> None:
        self._call(self.proxy.start())

    def close(self) -> None:
        if self.up:
            self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
