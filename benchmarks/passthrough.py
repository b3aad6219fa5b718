"""A reference for benchmarks/gateway.py: an HTTP proxy that only passes MCP's POSTs through to
the upstream and its answers back, with nothing of Tether's (no token, no proof, no decision,
no record, no report). It is served and posts upstream as the gateway's hot path is (uvicorn
with httptools; tether/gateway/http1.py), so what it adds over the direct call is what one
more process on the call's path costs on this machine, and the gateway's figure beyond it is
Tether's own work.

    python benchmarks/passthrough.py UPSTREAM_URL PORT

It answers a GET (the client's optional event stream) and a DELETE (ending a session) with
405, as a server without them does; the official client goes on without them.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.types import Receive, Scope, Send

from tether.gateway.http1 import Pool

PASSED = (b"accept", b"content-type", b"mcp-session-id", b"mcp-protocol-version")
ANSWERED = ("content-type", "mcp-session-id", "cache-control")


class PassThrough:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.pool: Pool | None = None  # made on the server's event loop, at the first post

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 405, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in PASSED}
        self.pool = self.pool or Pool(self.upstream, {})
        response = await self.pool.post(bytes(body), headers)
        kept = [(k.encode(), v.encode()) for k, v in response.headers.items() if k in ANSWERED]
        await send({"type": "http.response.start", "status": response.status, "headers": kept})
        async for chunk in response.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        PassThrough(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        http="httptools",
        lifespan="off",  # nothing to start or stop: its pool is made at the first post
        log_level="warning",
        access_log=False,
    )
