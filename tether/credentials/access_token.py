"""Task tokens: JWT access tokens (RFC 9068, `typ` at+jwt) signed by the service's keyring.

A token says who the work is for (`sub`, the user), who is doing it (`client_id`, and the RFC 8693
`act` chain of every agent that delegated it, newest outermost), what it may do (`scope`, tool
names), where (`aud`, `ws`), in which task, until when, and which key must prove possession of it
(`cnf.jkt`, RFC 9449). `chain` and `tasks` list its ancestors' token and task ids, so revoking any
ancestor refuses it with a set lookup per hop instead of a walk through the store.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from tether.credentials.jws import sign, unverified_header, verified_payload
from tether.credentials.signing_keys import Keyring, SigningKey
from tether.errors import CredentialRefused

TOKEN_TYPE = "at+jwt"
TASK_USE = "task"
DOWNSTREAM_USE = "downstream"


class AccessClaims(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    iss: str
    sub: str
    aud: str
    exp: int
    iat: float  # to the millisecond: revocations of an agent or workspace compare with it
    jti: str
    client_id: str
    scope: str
    act: dict[str, Any]
    ws: str
    agent: str
    task: str
    grant: str
    use: str
    depth: int
    chain: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    # The keys (`agent/jkt`) the tokens it was delegated from were bound to: revoking one ends
    # the delegations made with it, as revoking a token ends those (`chain`).
    keys: tuple[str, ...] = ()
    parent_jti: str | None = None
    cnf: dict[str, str] | None = None
    decision: str | None = None  # a downstream token's one allowed decision

    @property
    def tools(self) -> frozenset[str]:
        return frozenset(self.scope.split())

    @property
    def jkt(self) -> str | None:
        return self.cnf.get("jkt") if self.cnf else None

    def delegation(self) -> dict[str, Any]:
        """`context.delegation`: how deep in a chain this token is, which agents delegated it
        (names, from the `act` chain), under which grant."""
        delegators = []
        for spiffe_id in self.actors()[1:]:
            _, _, name = spiffe_id.rpartition("/agent/")
            delegators.append(name or spiffe_id)
        return {"depth": self.depth, "delegators": delegators, "grant": self.grant}

    def actors(self) -> list[str]:
        """The SPIFFE ids of the `act` chain, the current actor first."""
        found, act = [], self.act
        while isinstance(act, dict) and "sub" in act:
            found.append(str(act["sub"]))
            act = act.get("act")  # type: ignore[assignment]
        return found


_encode = msgspec.json.Encoder().encode


def issued_at(now: float) -> float:
    """`iat` for a token issued at `now`: milliseconds, never later than `now`."""
    return math.floor(now * 1000) / 1000


_decoder = msgspec.json.Decoder(AccessClaims)


def issue(claims: AccessClaims, key: SigningKey) -> str:
    body = {k: v for k, v in msgspec.structs.asdict(claims).items() if v not in (None, ())}
    return sign({"typ": TOKEN_TYPE, "kid": key.kid}, _encode(body), key.key)


def decode(
    token: object, keyring: Keyring, *, issuer: str, audience: str, now: float, skew: float
) -> tuple[AccessClaims, SigningKey]:
    """The claims of a token this service issued to `audience`, checked in full, and the key
    that signed it; raises CredentialRefused with the first thing wrong, carrying the claims
    once their signature is verified (a genuine token refused: its denial is its task's, kept
    as that workspace keeps records)."""
    header = unverified_header(token, "access token")
    assert isinstance(token, str)
    if header.get("typ") != TOKEN_TYPE:
        raise CredentialRefused(f"the token's typ is {header.get('typ')!r}, not {TOKEN_TYPE}")
    kid = header.get("kid")
    key = keyring.verification_key(kid, now) if isinstance(kid, str) else None
    if key is None:
        raise CredentialRefused(f"the token is signed with an unknown or retired key ({kid})")
    payload = verified_payload(token, key.key, "access token")
    try:
        claims = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise CredentialRefused(f"the token's claims are malformed: {exc}") from exc
    if claims.iss != issuer:
        raise CredentialRefused(
            f"the token was issued by {claims.iss!r}, not {issuer!r}", subject=claims
        )
    if claims.aud != audience:
        raise CredentialRefused(
            f"wrong audience: the token is for {claims.aud!r}, not {audience!r}", subject=claims
        )
    if now >= claims.exp:
        raise CredentialRefused(f"the token expired {now - claims.exp:.0f} s ago", subject=claims)
    if claims.iat > now + skew:
        raise CredentialRefused("the token is issued in the future", subject=claims)
    return claims, key
