"""The gateway's refusals at its door: an OAuth error (RFC 6750 section 3) with the `DPoP`
challenge RFC 9449 section 7.1 asks of a resource server, for a request whose token or proof
does not stand. Both the door (http.py) and the hot path (a reply to what it asked the
client, whose proof it claims itself) refuse this way."""

from __future__ import annotations

import json

from starlette.types import Send


async def refuse(send: Send, status: int, error: str, description: str) -> None:
    body = json.dumps({"error": error, "error_description": description}).encode()
    challenge = f'DPoP error="{error}", error_description="{_quoted(description)}"'
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", challenge.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _quoted(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')[:300]
