"""Compact JWS (RFC 7515) read strictly, for every token, assertion and proof Tether accepts.

One place decides what a well-formed token is: ASCII, bounded in size, three segments, a JSON
header with `alg` ES256 (never `none`, never a MAC: no algorithm confusion), and a signature
that verifies. Every failure is a CredentialRefused naming what was wrong.
"""

from __future__ import annotations

from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from tether.errors import CredentialRefused
from tether.identity.jwk import ALGORITHM

MAX_TOKEN_BYTES = 8192
_ALGORITHMS = [ALGORITHM]


def unverified_header(token: object, what: str, error: str = "invalid_token") -> dict[str, Any]:
    """The header of a compact JWS, before its signature is checked (to choose the key)."""
    if not isinstance(token, str) or not token:
        raise CredentialRefused(f"no {what} was presented", error)
    if len(token) > MAX_TOKEN_BYTES or not token.isascii():
        raise CredentialRefused(f"the {what} is not a compact JWS of at most 8 KiB", error)
    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError, TypeError) as exc:
        raise CredentialRefused(f"the {what} is malformed: {exc}", error) from exc
    if header.get("alg") != ALGORITHM:
        raise CredentialRefused(
            f"the {what} is signed with {header.get('alg')!r}; only {ALGORITHM} is accepted", error
        )
    return dict(header)


def unverified_payload(token: str) -> bytes:
    """The payload of a token whose header was read, before its signature is checked."""
    return jws.extract_compact(token.encode()).payload


def verified_payload(token: str, key: ECKey, what: str, error: str = "invalid_token") -> bytes:
    """The payload of `token` if `key` verifies its signature."""
    try:
        return jws.deserialize_compact(token, key, algorithms=_ALGORITHMS).payload
    except (JoseError, ValueError, TypeError) as exc:
        raise CredentialRefused(f"the {what}'s signature does not verify", error) from exc


def sign(header: dict[str, Any], payload: bytes, key: ECKey) -> str:
    result = jws.serialize_compact(
        {"alg": ALGORITHM, **header}, payload, key, algorithms=_ALGORITHMS
    )
    return result if isinstance(result, str) else result.decode()
