"""HTTP/1.1 (RFC 9112) POSTs to one upstream, over kept-alive connections: the transport of the
hot path's tool calls (forward.py). Each connection is an asyncio protocol, and httptools (the
parser uvicorn serves with) reads its responses.

Why not a general client: posting tool calls to benchmarks/mcp_echo.py in a one-off script
(1,000 calls each, two rounds, the caller's CPU per call), aiohttp took 0.51 to 0.54 ms and
this module 0.21 to 0.25 ms, and the gateway's one event loop waits that long on every call.
So this does only what a post of JSON-RPC needs, and leaves the rest to the SDK's client,
which opens the session: no redirects (that client follows none either), no cookies, no
compression, no HTTP/2. A URL this does not serve as the SDK's client would (credentials in
it, or a proxy set in the environment) gets no pool (`pool`), and its calls take the SDK's
path.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx2

READ_PAUSE_BYTES = 1 << 20  # a response's unread body past this: stop reading the socket
MAX_CONNECTIONS = 100  # to one upstream; more posts at once wait for one of them


class ConnectionFailed(Exception):
    """The upstream could not be reached, the connection broke, or it did not answer in
    HTTP/1.1. Whether a request already sent was acted on is unknown."""


def pool(url: str, headers: Mapping[str, str]) -> Pool | None:
    """A pool of connections for posting to `url` with `headers` (the gateway's credentials
    for that upstream), or None if this client would not reach it as the SDK's client does (or
    cannot send the headers: the SDK's client then says what is wrong with them)."""
    parts = urlsplit(url)
    if not url.isascii() or parts.username is not None or parts.password is not None:
        return None
    try:
        if not parts.hostname or parts.port == 0:
            return None
        if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(
            parts.hostname
        ):
            return None
        return Pool(url, headers)
    except ValueError:  # a port out of range, or a header HTTP does not allow
        return None


class Pool:
    """Kept-alive connections to one upstream, each carrying one POST at a time, at most
    `max_connections` of them: a burst of agents' calls does not open a connection each on an
    upstream that may refuse or crumble under them; the calls past the cap wait their turn
    (within their own deadline), each handed the next connection that comes free."""

    def __init__(
        self, url: str, headers: Mapping[str, str], max_connections: int = MAX_CONNECTIONS
    ) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        secure = parts.scheme == "https"
        self._address = (parts.hostname, parts.port or (443 if secure else 80))
        self._ssl: ssl.SSLContext | None = httpx2.create_ssl_context() if secure else None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"POST {target} HTTP/1.1\r\nhost: {parts.netloc}\r\n{_lines(headers)}"
        self._head = head.encode("latin-1")  # what cannot be sent is refused here, at once
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._max = max_connections
        self._opening = 0  # connections being opened, counted against the cap
        self._waiting: deque[asyncio.Future[_Connection | None]] = deque()

    async def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """Send a POST and return its response once its head has come; its body is read from
        the response. Raises ConnectionFailed (ValueError for headers HTTP does not allow)."""
        response = await self.send(body, headers)
        await response.arrived()
        return response

    async def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """Send a POST, on the next connection free, and return its response before its head
        has come (`Response.arrived`): from then on, the upstream may be acting on it."""
        own = f"{_lines(headers)}content-length: {len(body)}\r\n\r\n"
        request = self._head + own.encode("latin-1") + body
        connection = await self._connection()
        return connection.send(request)

    async def close(self) -> None:
        for connection in list(self._all):
            connection.abort()
        self._idle.clear()

    @property
    def connections(self) -> int:
        """Connections open or being opened."""
        return len(self._all) + self._opening

    async def _connection(self) -> _Connection:
        """An idle connection, a new one while under the cap, or the next one freed."""
        while True:
            idle = self._idle_connection()
            if idle is not None:
                return idle
            if self.connections < self._max:
                return await self._connect()
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                handed = await waiter
            except BaseException:  # cancelled (its deadline): what it was handed goes on
                if waiter.done() and not waiter.cancelled():
                    self._hand_on(waiter.result())
                elif waiter in self._waiting:
                    self._waiting.remove(waiter)
                raise
            if handed is not None and handed.usable:
                return handed
            # None: a connection closed, so there is room to open one (or another was idle)

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
        return None

    async def _connect(self) -> _Connection:
        host, port = self._address
        loop = asyncio.get_running_loop()
        self._opening += 1
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self),
                host,
                port,
                ssl=self._ssl,
                server_hostname=host if self._ssl is not None else None,
            )
        except BaseException as exc:
            self._opening -= 1
            self._hand_on(None)  # the room it would have taken is free
            if isinstance(exc, OSError | ssl.SSLError):
                raise ConnectionFailed(f"cannot connect to {host}:{port}: {exc}") from exc
            raise
        self._opening -= 1
        self._all.add(connection)
        return connection

    def _kept(self, connection: _Connection) -> None:
        """A connection is free for another post: the first call waiting gets it."""
        self._hand_on(connection)

    def _gone(self, connection: _Connection) -> None:
        self._all.discard(connection)
        if connection in self._idle:  # closed by the upstream while idle
            self._idle.remove(connection)
        self._hand_on(None)  # room for a call waiting to open one

    def _hand_on(self, connection: _Connection | None) -> None:
        """To the first call still waiting: a free connection, or (None) word that there is
        room to open one. With no one waiting, a free connection waits idle."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if connection is not None and connection.usable:
            self._idle.append(connection)


class Response:
    """The response to a request sent: its head (`status`, `headers` by lower-case name) once
    it has `arrived`, and its body as the upstream sends it."""

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.complete = False  # the whole body has come
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._unread = 0
        self._error: ConnectionFailed | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released: asyncio.TimerHandle | None = None  # the rest is dropped as it comes

    async def arrived(self) -> None:
        """Wait for the head. Raises ConnectionFailed; failed or cancelled mid-request, the
        connection is closed, its state lost."""
        try:
            await self.head
        except BaseException:
            self.close()
            raise

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, as it arrives. Raises ConnectionFailed if it breaks off."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._unread -= len(chunk)
                if self._unread < READ_PAUSE_BYTES:
                    self._connection.resume()
                yield chunk
            elif self._error is not None:
                raise self._error
            elif self.complete:
                return
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter

    async def read(self, limit: int) -> bytes:
        """The whole body; ConnectionFailed if it is over `limit` bytes."""
        body = bytearray()
        async for chunk in self.chunks():
            body += chunk
            if len(body) > limit:
                self.close()
                raise ConnectionFailed(f"the upstream's answer is over {limit:,} bytes")
        return bytes(body)

    def close(self) -> None:
        """Done with the response: a connection whose response was not read to its end cannot
        carry another, so it is closed."""
        if not self.complete:
            self._connection.abort()

    def release(self, within: float) -> None:
        """Done reading: the rest of the body is dropped as it comes, with no task waiting on
        it, and the connection goes back to the pool when the response ends; one that has not
        ended `within` seconds from now is closed."""
        if self.complete or self._released is not None:
            return
        self._chunks.clear()
        self._unread = 0
        self._connection.resume()
        self._released = asyncio.get_running_loop().call_later(within, self.close)

    def _feed(self, chunk: bytes) -> None:
        if self._released is not None:
            return
        self._chunks.append(chunk)
        self._unread += len(chunk)
        if self._unread >= READ_PAUSE_BYTES:
            self._connection.pause()
        self._wake()

    def _end(self, error: ConnectionFailed | None) -> None:
        if self._released is not None:
            self._released.cancel()
        if error is None:
            self.complete = True
        else:
            self._error = error
        if not self.head.done():
            if error is not None:
                self.head.set_exception(error)
            else:
                self.head.set_result(None)
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One connection, carrying one request at a time; httptools calls the `on_` methods."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: Response | None = None
        self._paused = False

    @property
    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, request: bytes) -> Response:
        assert self._transport is not None and self._response is None
        self._response = Response(self)
        self._transport.write(request)
        return self._response

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def pause(self) -> None:
        if not self._paused and self.usable:
            self._paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.usable:
            self._paused = False
            assert self._transport is not None
            self._transport.resume_reading()

    # -- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._response is None:  # nothing was asked: the connection is not HTTP as expected
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"the upstream's answer is not HTTP/1.1: {exc}")
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._pool._gone(self)
        response = self._response
        if response is not None and response.head.done() and _ends_at_close(response):
            self.on_message_complete()  # a body without a length ends with the connection
        else:
            self._fail(f"the upstream closed the connection{f': {exc}' if exc else ''}")

    # -- httptools ----------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        response.status = self._parser.get_status_code()
        if response.status >= 200:  # an interim answer (1xx) is followed by the real one
            response.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._response._feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        assert response is not None
        if response.status < 200:
            response.headers.clear()
            return
        self._response = None
        response._end(None)
        if self.usable and self._parser.should_keep_alive():
            self._pool._kept(self)
        else:
            self.abort()

    def _fail(self, why: str) -> None:
        response, self._response = self._response, None
        if response is not None:
            response._end(ConnectionFailed(why))


def _ends_at_close(response: Response) -> bool:
    headers = response.headers
    return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")


def _lines(headers: Mapping[str, str]) -> str:
    """Header lines; a name or value that could end a line early is refused, not sent."""
    lines = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"header {name!r} has a character that HTTP does not allow")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines)


__all__ = ["ConnectionFailed", "Pool", "Response", "pool"]
