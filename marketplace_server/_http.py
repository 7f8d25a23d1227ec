"""uvicorn's httptools protocol with the bounds it lacks: a slow client cannot hold a
connection.

uvicorn arms a timer only between requests (``timeout_keep_alive``): a client that connects
and sends nothing, or sends its headers a byte at a time (slowloris), or a body that never
ends, keeps its connection, and httptools collects headers without a size limit. This
subclass adds, per connection:

* a header deadline, from the connection (or the first byte of the next request on a
  kept-alive one) to the end of the headers: then ``408`` and close;
* a body deadline, from the end of the headers to the end of the body: then close;
* a header size bound: ``431`` and close.

The limits come from the server configuration (``ServerConfig``) through the same
environment variable the worker processes read it from.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CONFIG_ENV = "IMAGEKIT_SERVER_CONFIG"
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 60.0
MAX_HEADER_BYTES = 64 * 1024


@functools.cache
def limits() -> tuple[float, float, int]:
    """(header timeout, body timeout, header bytes) of this server process."""
    values = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    return (
        float(values.get("header_timeout", HEADER_TIMEOUT)),
        float(values.get("body_timeout", BODY_TIMEOUT)),
        int(values.get("max_header_bytes", MAX_HEADER_BYTES)),
    )


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus header and body deadlines and a header size bound."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout, self._body_timeout, self._max_header_bytes = limits()
        self._deadline: TimerHandle | None = None
        self._in_head = True
        self._head_bytes = 0

    def _arm(self, seconds: float, status: bytes | None) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, status)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, status: bytes | None) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if status is not None:
            self._refuse(status)
        else:
            self.transport.close()

    def _refuse(self, status: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_timeout, b"408 Request Timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused or cut off: parse nothing more
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self._max_header_bytes:
            self._disarm()
            if not self.transport.is_closing():
                self._refuse(b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a kept-alive connection
            self._in_head = True
            self._head_bytes = 0
            self._arm(self._header_timeout, b"408 Request Timeout")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self._body_timeout, None)  # a response may be on its way: just close
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
