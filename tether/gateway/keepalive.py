"""HTTP keep-alive to streamable HTTP upstreams.

The MCP client closes a POST's event stream as soon as the response to its request has come,
before reading the end of the stream that the server sends right after. An HTTP/1.1 connection
whose response was not read to its end cannot carry another request, so every tool call would
open a new TCP connection to the upstream (about 0.3 ms a call, measured on an `Upstream`
alone against benchmarks/mcp_echo.py; the gateway benchmark is too noisy to show it). Here a
POST's event stream closed early is first read to its end, for at most `DRAIN_SECONDS`, so its
connection goes back to the pool. The client has its response by then: the reading is off the
call's path, in the client's task for that POST.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx2

DRAIN_SECONDS = 1.0  # a server still sending after this long gets its connection closed


class KeepAliveTransport(httpx2.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        content_type = response.headers.get("content-type", "")
        stream = response.stream
        if (
            request.method == "POST"
            and content_type.startswith("text/event-stream")
            and isinstance(stream, httpx2.AsyncByteStream)
        ):
            response.stream = _ReadToEndOnClose(stream)
        return response


class _ReadToEndOnClose(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream) -> None:
        self._stream = stream
        self._ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part
        self._ended = True

    async def aclose(self) -> None:
        if not self._ended:
            with anyio.move_on_after(DRAIN_SECONDS):
                try:
                    async for _ in self._stream:
                        pass
                except httpx2.TransportError:  # it broke off: closing is all that is left
                    pass
        await self._stream.aclose()


__all__ = ["KeepAliveTransport"]
