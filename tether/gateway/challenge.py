"""The gateway's refusals at its door: an OAuth error (RFC 6750 section 3) with the `DPoP`
challenge RFC 9449 section 7.1 asks of a resource server, for a request whose token or proof
does not stand. Both the door (http.py) and the hot path (a reply to what it asked the
client, whose proof it spends itself) refuse this way."""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import Send

from tether.credentials.dpop import REPLAYED
from tether.credentials.service import Credentials


async def spent(credentials: Credentials, once: Sequence[tuple[str, float]], send: Send) -> bool:
    """Write the request's proof's one-time id, checked at the door; False when the request
    was refused instead: the proof was used before (a replay), or could not be written."""
    try:
        fresh = credentials.claim_once(once)
    except Exception:
        await refuse(send, 503, "temporarily_unavailable", "the proof could not be recorded")
        return False
    if not fresh:
        await refuse(send, 401, "invalid_dpop_proof", REPLAYED)
    return fresh


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
