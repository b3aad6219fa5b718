"""The hot path's HTTP/1.1 client (tether/gateway/http1.py), against real sockets: servers that
answer exactly as each test scripts them, byte for byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from tether.gateway import http1
from tether.gateway.http1 import ConnectionFailed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A server on 127.0.0.1 running `handler` per connection; yields its URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/mcp?x=1"


async def request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One request off the connection: its head line, headers and body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


async def requests(
    reader: asyncio.StreamReader,
) -> AsyncIterator[tuple[str, dict[str, str], bytes]]:
    """Each request on the connection, until the client closes it."""
    while not reader.at_eof():
        try:
            yield await request(reader)
        except asyncio.IncompleteReadError:
            return


def ok(body: bytes, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "content-type: application/json", *extra]
    return ("\r\n".join(lines) + f"\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)


def test_posts_go_on_one_kept_alive_connection_with_their_headers() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for asked in requests(reader):
            seen.append(asked)
            writer.write(ok(b'{"n":%d}' % len(seen)))

    async def run() -> list[bytes]:
        async with serving(handler) as url:
            pool = http1.Pool(url, {"authorization": "Bearer upstream"})
            bodies = []
            for i in range(3):
                response = await pool.post(b'{"i":%d}' % i, {"mcp-session-id": "s1"})
                assert (response.status, response.content_type) == (200, "application/json")
                bodies.append(await response.read(1000))
            await pool.close()
            return bodies

    assert asyncio.run(run()) == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert connections == 1
    line, headers, body = seen[2]
    assert line == "POST /mcp?x=1 HTTP/1.1"
    assert headers["authorization"] == "Bearer upstream" and headers["mcp-session-id"] == "s1"
    assert headers["host"].startswith("127.0.0.1:") and body == b'{"i":2}'


def test_a_streamed_body_is_read_as_it_comes_not_at_its_end() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n" + chunked(b"data: first\n\n"))
        await release.wait()  # the client has read the first part
        writer.write(chunked(b"data: second\n\n") + b"0\r\n\r\n")

    async def run() -> list[bytes]:
        async with serving(handler) as url:
            pool = http1.Pool(url, {})
            response = await pool.post(b"{}", {})
            read = []
            async with asyncio.timeout(10):  # a client that waited for the end would hang
                async for chunk in response.chunks():
                    read.append(chunk)
                    release.set()
            assert response.complete
            return read

    assert asyncio.run(run()) == [b"data: first\n\n", b"data: second\n\n"]


def test_a_body_without_a_length_ends_with_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{}")
        writer.close()

    async def run() -> bytes:
        async with serving(handler) as url:
            return await (await http1.Pool(url, {}).post(b"{}", {})).read(100)

    assert asyncio.run(run()) == b"{}"


def test_an_interim_answer_is_followed_by_the_real_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + ok(b"[1]"))

    async def run() -> tuple[int, dict[str, str], bytes]:
        async with serving(handler) as url:
            response = await http1.Pool(url, {}).post(b"{}", {})
            return response.status, response.headers, await response.read(100)

    status, headers, body = asyncio.run(run())
    assert (status, body) == (200, b"[1]") and "link" not in headers


def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(ok(b"{}"))  # keep-alive by default, but closed right after
        await writer.drain()
        writer.close()

    async def run() -> list[bytes]:
        async with serving(handler) as url:
            pool = http1.Pool(url, {})
            first = await (await pool.post(b"{}", {})).read(100)
            await asyncio.sleep(0.05)  # the close arrives
            assert not pool._idle and not pool._all  # nothing kept of the closed connection
            second = await (await pool.post(b"{}", {})).read(100)
            return [first, second]

    assert asyncio.run(run()) == [b"{}", b"{}"]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", "not HTTP/1.1"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf", "closed the connection"),
        (b"", "closed the connection"),
    ],
)
def test_a_broken_answer_fails_the_post_with_a_reason(answer: bytes, why: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def run() -> None:
        async with serving(handler) as url:
            response = await http1.Pool(url, {}).post(b"{}", {})
            await response.read(100)

    with pytest.raises(ConnectionFailed, match=why):
        asyncio.run(run())


def test_an_upstream_that_is_not_there_fails_the_post() -> None:
    async def run() -> None:
        async with serving(lambda r, w: asyncio.sleep(0)) as url:
            pass  # the port is free again
        await http1.Pool(url, {}).post(b"{}", {})

    with pytest.raises(ConnectionFailed, match="cannot connect"):
        asyncio.run(run())


def test_a_large_body_is_read_whole_and_a_limit_holds() -> None:
    body = bytes(range(256)) * (5 * 4096)  # 5 MiB: reading pauses and resumes on the way

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in requests(reader):
            writer.write(ok(body))

    async def run() -> bytes:
        async with serving(handler) as url:
            pool = http1.Pool(url, {})
            read = await (await pool.post(b"{}", {})).read(len(body))
            with pytest.raises(ConnectionFailed, match="over 1,000 bytes"):
                await (await pool.post(b"{}", {})).read(1000)
            return read

    assert asyncio.run(run()) == body


def test_a_cancelled_post_does_not_leave_its_connection_for_the_next() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await request(reader)
        if connections == 1:
            await asyncio.sleep(1)  # too slow: the caller gives up
        writer.write(ok(b"{}"))

    async def run() -> bytes:
        async with serving(handler) as url:
            pool = http1.Pool(url, {})
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await pool.post(b"{}", {})
            return await (await pool.post(b"{}", {})).read(100)

    assert asyncio.run(run()) == b"{}"
    assert connections == 2


def test_headers_that_could_split_a_request_are_refused() -> None:
    with pytest.raises(ValueError, match="does not allow"):
        http1.Pool("http://127.0.0.1:1/mcp", {"x": "a\r\nhost: evil"})


def test_urls_this_client_would_not_reach_as_the_sdk_does_get_no_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert http1.pool("http://upstream.internal/mcp", {}) is not None
    assert http1.pool("http://user:secret@upstream.internal/mcp", {}) is None
    assert http1.pool("http://upstream.internal/mcp", {"x": "a\nb"}) is None
    monkeypatch.setenv("http_proxy", "http://proxy.internal:3128")
    assert http1.pool("http://upstream.internal/mcp", {}) is None
    monkeypatch.setenv("no_proxy", "upstream.internal")
    assert http1.pool("http://upstream.internal/mcp", {}) is not None


@pytest.mark.parametrize("ends", [True, False])
def test_a_released_response_keeps_its_connection_only_if_it_ends_in_time(ends: bool) -> None:
    """After the answer, the rest of an event stream is dropped as it comes; its connection
    carries the next post if the stream ends within the time given, and is closed if not."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for _ in requests(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
            writer.write(b"transfer-encoding: chunked\r\n\r\n" + chunked(b"data: answer\n\n"))
            await asyncio.sleep(0.05)
            writer.write(chunked(b": the rest\n\n") + (b"0\r\n\r\n" if ends else b""))

    async def run() -> None:
        async with serving(handler) as url:
            pool = http1.Pool(url, {})
            for _ in range(3):
                response = await pool.post(b"{}", {})
                async for chunk in response.chunks():
                    assert chunk == b"data: answer\n\n"
                    break
                response.release(0.5)
                await asyncio.sleep(0.6)

    asyncio.run(run())
    assert connections == (1 if ends else 3)


def held_server() -> tuple[Handler, asyncio.Event, list[int]]:
    """A server that answers each request only once `gate` is set; `seen` counts connections
    (its length) and the requests on each."""
    gate = asyncio.Event()
    seen: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(0)
        mine = len(seen) - 1
        async for _ in requests(reader):
            seen[mine] += 1
            await gate.wait()
            writer.write(ok(b"{}"))

    return handler, gate, seen


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


def test_posts_past_the_cap_wait_for_a_connection_that_comes_free() -> None:
    handler, gate, seen = held_server()

    async def run() -> list[bytes]:
        async with serving(handler) as url:
            pool = http1.Pool(url, {}, max_connections=2)

            async def call() -> bytes:
                return await (await pool.post(b"{}", {})).read(100)

            calls = [asyncio.create_task(call()) for _ in range(5)]
            await eventually(lambda: sum(seen) == 2)
            await asyncio.sleep(0.2)  # time enough for a third connection, were one opened
            assert seen == [1, 1] and pool.connections == 2
            gate.set()
            async with asyncio.timeout(5):
                return await asyncio.gather(*calls)

    assert asyncio.run(run()) == [b"{}"] * 5
    assert len(seen) == 2 and sum(seen) == 5


def test_a_post_that_stops_waiting_passes_its_turn_on() -> None:
    """A call cancelled while waiting (its deadline passed) leaves the queue; one cancelled as
    it was handed a connection hands it to the next in line, so no connection is lost."""
    handler, gate, seen = held_server()

    async def run() -> bytes:
        async with serving(handler) as url:
            pool = http1.Pool(url, {}, max_connections=1)

            async def gives_up() -> None:
                async with asyncio.timeout(0.1):
                    await pool.post(b"{}", {})

            # Queued in this order behind the post below, which takes the one connection.
            waiting = [asyncio.create_task(c) for c in (gives_up(), pool.post(b"{}", {}))]
            last = asyncio.create_task(pool.post(b"{}", {}))
            asyncio.get_running_loop().call_later(0.3, gate.set)
            response = await pool.post(b"{}", {})
            # Its answer came whole: its connection is handed to the second call in line, which
            # has not run yet. Cancelled now, it must pass the connection on to the last.
            waiting[1].cancel()
            assert await response.read(100) == b"{}"
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
            assert [type(o) for o in outcomes] == [TimeoutError, asyncio.CancelledError]
            async with asyncio.timeout(5):
                answer = await (await last).read(100)
            assert not pool._waiting
            return answer

    assert asyncio.run(run()) == b"{}"
    assert seen == [2]  # one connection: the first call's, then the last's


def test_a_connection_that_closes_makes_room_for_a_post_waiting() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await request(reader)
        if connections == 1:
            await asyncio.sleep(0.1)
            writer.close()  # no answer
            return
        writer.write(ok(b"{}"))

    async def run() -> bytes:
        async with serving(handler) as url:
            pool = http1.Pool(url, {}, max_connections=1)
            first = asyncio.create_task(pool.post(b"{}", {}))
            await eventually(lambda: connections == 1)
            second = asyncio.create_task(pool.post(b"{}", {}))
            with pytest.raises(ConnectionFailed, match="closed the connection"):
                await first
            async with asyncio.timeout(5):
                return await (await second).read(100)

    assert asyncio.run(run()) == b"{}"
    assert connections == 2
