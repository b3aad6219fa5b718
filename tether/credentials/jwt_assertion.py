"""Agent assertions: the JWT an agent signs to prove who it is (RFC 7523 section 2.2 style).

`iss` = `sub` = the agent's SPIFFE id, `aud` = this service, a fresh `jti`, and a short life: an
assertion is good for one token exchange within at most five minutes, and its `jti` goes into
the replay cache, so a captured assertion cannot be exchanged twice.
"""

from __future__ import annotations

import os

import msgspec
from joserfc.jwk import ECKey

from tether.credentials.jws import sign, unverified_header, unverified_payload, verified_payload
from tether.errors import CredentialRefused
from tether.identity.jwk import thumbprint

ASSERTION_TYPE = "JWT"
MAX_ASSERTION_TTL = 300
DEFAULT_ASSERTION_TTL = 60


class AssertionClaims(msgspec.Struct, frozen=True):
    iss: str
    sub: str
    aud: str
    iat: int
    exp: int
    jti: str


_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(AssertionClaims)


def make_assertion(
    key: ECKey, *, agent_id: str, audience: str, now: float, ttl: int = DEFAULT_ASSERTION_TTL
) -> str:
    """What an agent (its SDK) sends as the actor token of a token exchange."""
    claims = AssertionClaims(
        iss=agent_id,
        sub=agent_id,
        aud=audience,
        iat=int(now),
        exp=int(now) + ttl,
        jti=os.urandom(16).hex(),
    )
    return sign({"typ": ASSERTION_TYPE, "kid": thumbprint(key)}, _encode(claims), key)


def assertion_subject(token: object) -> tuple[str, str]:
    """(SPIFFE id, kid) the assertion claims, unverified: which keys to check it with."""
    header = unverified_header(token, "actor assertion", "invalid_client")
    assert isinstance(token, str)
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise CredentialRefused("the actor assertion names no key (kid)", "invalid_client")
    try:
        claims = _decoder.decode(unverified_payload(token))
    except (msgspec.DecodeError, ValueError) as exc:
        raise CredentialRefused(
            f"the actor assertion's claims are malformed: {exc}", "invalid_client"
        ) from exc
    return claims.sub, kid


def verify_assertion(
    token: str, key: ECKey, *, audience: str, now: float, skew: float
) -> AssertionClaims:
    payload = verified_payload(token, key, "actor assertion", "invalid_client")
    try:
        claims = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise CredentialRefused(
            f"the actor assertion's claims are malformed: {exc}", "invalid_client"
        ) from exc
    if claims.iss != claims.sub:
        raise CredentialRefused("the actor assertion's iss and sub differ", "invalid_client")
    if claims.aud != audience:
        raise CredentialRefused(
            f"the actor assertion is for {claims.aud!r}, not {audience!r}", "invalid_client"
        )
    if now >= claims.exp:
        raise CredentialRefused("the actor assertion expired", "invalid_client")
    if claims.iat > now + skew or claims.exp - claims.iat > MAX_ASSERTION_TTL:
        raise CredentialRefused(
            f"the actor assertion must be issued now and live at most {MAX_ASSERTION_TTL} s",
            "invalid_client",
        )
    if not 16 <= len(claims.jti) <= 128:
        raise CredentialRefused("the actor assertion needs a fresh, random jti", "invalid_client")
    return claims
