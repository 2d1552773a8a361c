"""uvicorn's HTTP/1.1 protocol with a bound on the time a request's headers may take.

uvicorn (0.54, httptools) arms no timer while it waits for a request's headers: a client that
connects and sends nothing, or sends its headers a byte at a time (slowloris), holds the
connection and its file descriptor forever, and enough such clients exhaust the process's
descriptors. Its keep-alive timer does not help: the first byte of a next request cancels it.

The protocol below closes a connection whose next request's headers are not complete within
`timeout_s` of the connection opening or of the previous response. The body that follows is
bounded by the body middleware (app/core/middleware.py), which answers 408.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def bounded_headers_protocol(timeout_s: float) -> type[HttpToolsProtocol]:
    """The protocol class to pass as `uvicorn.Config(http=...)`."""

    class BoundedHeadersProtocol(HttpToolsProtocol):
        _headers_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Idle until the next request, unless a pipelined one has started already.
            if self.cycle.response_complete and not self.transport.is_closing():
                self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._headers_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
                self._headers_timer = None

        def _headers_too_slow(self) -> None:
            self._headers_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return BoundedHeadersProtocol
