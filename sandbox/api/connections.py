"""Connections: how long a client may take to send its request, and how many connections one
client address may hold. uvicorn's HTTP protocol (httptools) with three limits added.

uvicorn (0.55) bounds only the idle time between two requests of a connection
(``timeout_keep_alive``, armed once an answer is sent, disarmed by any byte received) and, with
``limit_concurrency``, all connections and tasks together (a ``503`` once a request's headers are
read, whoever sent them). Neither of its HTTP protocols (httptools, a dependency of Veil, and the
pure-Python h11) bounds how long a client takes to send a request's headers or body, nor how many
connections one address holds, so a client that drips its request keeps a connection (and a file
descriptor) for as long as it likes.
:class:`HttpProtocol` adds, per server process:

- a **header timeout** (``VEIL_HEADER_TIMEOUT_S``), from the connection — or from the first byte
  of the next request on a kept-alive connection — to the end of the request's headers;
- a **body timeout** (``VEIL_BODY_TIMEOUT_S``), from the end of the headers to the end of the
  body. Past either: ``408 request_timeout``, and the connection is closed. If the app has
  already begun its answer (it did not wait for the body), the answer is finished and the
  connection closed after it; the rest of the body is not read;
- a **cap on the connections of one client address** (``VEIL_CONNECTIONS_PER_ADDRESS``; the
  address is the TCP peer's). A connection over it is answered ``429 too_many_connections``
  (``Retry-After: 1``) at once, before anything of it is read, and closed.

Each answer is a ``VeilError``'s RFC 9457 problem, written by the connection itself (no request
reached the app, or the app's own answer is dropped). After it, the server stops sending, drains
what the client still sends for at most :data:`LINGER_S`, then closes: a client that sent its
request before the answer still reads the answer rather than a reset.

``veil serve`` (and the tests' served apps) run uvicorn with :func:`server_config`. Under
``uvicorn server:create_app --factory --http sandbox.api.connections:HttpProtocol`` the limits
come from the ``VEIL_*`` environment.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from sandbox.api.problems import MEDIA_TYPE
from sandbox.config import Settings
from sandbox.errors import RequestTimeout, Throttled, TooManyConnections, VeilError

log = logging.getLogger("veil.http")

LINGER_S = 1.0  # after a refusal or a timeout: how long what the client still sends is drained


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    per_address: int  # 0: no cap

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            settings.header_timeout_s, settings.body_timeout_s, settings.connections_per_address
        )


class Addresses:
    """The open connections of each client address (one event loop: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()

    def enter(self, address: str) -> bool:
        if self.limit and self.open[address] >= self.limit:
            return False
        self.open[address] += 1
        return True

    def leave(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


def _answer(error: VeilError, default_headers: list[tuple[bytes, bytes]], path: str) -> bytes:
    """The whole HTTP response of ``error``'s problem, with ``Connection: close``."""
    problem = error.problem()
    if path:
        problem["instance"] = path
    body = json.dumps(problem, ensure_ascii=False).encode()
    head = [f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}".encode()]
    head += [name + b": " + value for name, value in default_headers]
    head += [
        f"content-type: {MEDIA_TYPE}".encode(),
        f"content-length: {len(body)}".encode(),
        b"connection: close",
    ]
    if isinstance(error, Throttled):
        head.append(f"retry-after: {error.retry_after}".encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the header and body timeouts and the per-address cap.

    ``limits`` and ``addresses`` are shared by every connection of a server: :func:`protocol`
    makes a subclass holding them; on this class itself they come from ``Settings()`` (the
    environment) at the first connection."""

    limits: ClassVar[ConnectionLimits | None] = None
    addresses: ClassVar[Addresses | None] = None

    @classmethod
    def _configured(cls) -> tuple[ConnectionLimits, Addresses]:
        if cls.limits is None or cls.addresses is None:
            cls.limits = ConnectionLimits.of(Settings())
            cls.addresses = Addresses(cls.limits.per_address)
        return cls.limits, cls.addresses

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits, self._addresses = self._configured()
        self._counted: str | None = None  # the address this connection is counted against
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._done = False  # answered by the connection itself: the rest is drained, not read

    # The connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else "unknown"
        if not self._addresses.enter(address):
            log.info("connection refused: %s has %d open", address, self._limits.per_address)
            limit = self._limits.per_address
            self._finish(
                TooManyConnections(
                    f"this address has {limit} connections open; close one, or retry later",
                    retry_after=1,
                ),
                path="",
            )
            return
        self._counted = address
        self._header_timer = self.loop.call_later(
            self._limits.header_timeout_s, self._header_timeout
        )

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._body_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = self._close_timer = None
        if self._counted is not None:
            self._addresses.leave(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return  # drained: the connection has been answered and is closing
        super().data_received(data)

    # The parser's events ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._header_timer = self.loop.call_later(
                self._limits.header_timeout_s, self._header_timeout
            )

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        # Cancelled at once by on_message_complete when the request has no body.
        self._body_timer = self.loop.call_later(self._limits.body_timeout_s, self._body_timeout)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # The timeouts -----------------------------------------------------------------------------

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._done:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier request of this connection is still being answered: close after it.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        seconds = self._limits.header_timeout_s
        log.info("request headers not received in %g s from %s", seconds, self._peer())
        self._finish(
            RequestTimeout(f"the request's headers did not arrive within {seconds:g} s"), path=""
        )

    def _body_timeout(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or self._done or cycle is None:
            return
        if self.pipeline:  # queued behind an answer: its body is not being read yet
            self._body_timer = self.loop.call_later(self._limits.body_timeout_s, self._body_timeout)
            return
        seconds = self._limits.body_timeout_s
        log.info("request body not received in %g s from %s", seconds, self._peer())
        if not cycle.response_started:
            # The app's answer, if it still makes one, is dropped; its next read sees a
            # disconnection.
            cycle.disconnected = True
            cycle.message_event.set()
            self._finish(
                RequestTimeout(f"the request's body did not arrive within {seconds:g} s"),
                path=self.scope["path"],
            )
        elif not cycle.response_complete:
            cycle.keep_alive = False  # the answer is finished, then the connection closed
            self.flow.pause_reading()
        else:
            self.transport.close()

    # Answering from the connection ------------------------------------------------------------

    def _finish(self, error: VeilError, path: str) -> None:
        """Send ``error``'s answer, stop sending, drain for at most :data:`LINGER_S`, close."""
        self._done = True
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        self.transport.write(_answer(error, self.server_state.default_headers, path))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._close_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"


def protocol(limits: ConnectionLimits) -> type[HttpProtocol]:
    """The protocol class of one server: ``limits``, and its own count of connections."""

    class Configured(HttpProtocol):
        pass

    Configured.limits = limits
    Configured.addresses = Addresses(limits.per_address)
    return Configured


def server_config(app: Callable[..., Any], settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration to serve ``app`` with ``settings``' connection limits (host and
    port from ``settings`` unless ``options`` name them; no WebSocket: Veil has none)."""
    options.setdefault("host", settings.host)
    options.setdefault("port", settings.port)
    return uvicorn.Config(app, http=protocol(ConnectionLimits.of(settings)), ws="none", **options)
