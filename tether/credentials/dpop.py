"""Proof of possession (RFC 9449 DPoP): a token is only usable by the holder of its key.

The client signs, for each request, a fresh proof naming the request's method (`htm`) and URL
(`htu`), the time, a unique `jti`, and the hash of the token it presents (`ath`), with the
private key whose thumbprint the token carries in `cnf.jkt`. A stolen token is useless without
the key; a stolen proof is useless for any other request, after `MAX_PROOF_AGE`, or a second
time: every `jti` is remembered in the store's replay cache (so across processes and replicas)
until the proof would be too old anyway.

The HTTP service reads a request's proof twice (to know whose rate the request counts against,
then for the call itself), so a proof whose signature verified is remembered by the hash of its
text, briefly: what a signature proves depends on the text alone. Everything that depends on the
request, the time or the replay cache is checked every time.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
from joserfc.jwk import ECKey

from tether.credentials.jws import sign, unverified_header, verified_payload
from tether.errors import CredentialRefused, InvalidInput
from tether.identity.jwk import parse_public_jwk, parsed_thumbprint, public_jwk

PROOF_TYPE = "dpop+jwt"
MAX_PROOF_AGE = 60.0
ERROR = "invalid_dpop_proof"

# Remember a key until a time; False if it was already remembered (the proof is a replay).
RememberOnce = Callable[[str, float], bool]
REPLAYED = "the DPoP proof was already used (replay)"
SIGNED_MEMO = 4096  # proofs whose signature verified: from a request's first reading to its second


class ProofClaims(msgspec.Struct, frozen=True):
    jti: str
    htm: str
    htu: str
    iat: float
    ath: str | None = None
    nonce: str | None = None


_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(ProofClaims)
_signed: dict[bytes, tuple[str, ProofClaims]] = {}  # SHA-256 of a proof -> its key's jkt, claims


def token_hash(access_token: str) -> str:
    """`ath`: base64url of the SHA-256 of the token's ASCII text."""
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make_proof(
    key: ECKey, *, htm: str, htu: str, now: float, access_token: str | None = None
) -> str:
    """A proof for one request (what the SDK sends in the `DPoP` header)."""
    claims: dict[str, Any] = {
        "jti": base64.urlsafe_b64encode(os.urandom(18)).decode(),
        "htm": htm,
        "htu": htu,
        "iat": int(now),
    }
    if access_token is not None:
        claims["ath"] = token_hash(access_token)
    return sign({"typ": PROOF_TYPE, "jwk": public_jwk(key)}, _encode(claims), key)


def check_proof(
    proof: object,
    *,
    htm: str,
    htu: str,
    now: float,
    remember_once: RememberOnce,
    access_token: str | None = None,
    skew: float = 5.0,
) -> str:
    """Check a proof for the request (`htm`, `htu`) and token; returns the thumbprint of its key,
    which the caller compares with the token's `cnf.jkt`. Raises CredentialRefused."""
    jkt, claims = _signed_claims(proof)
    if claims.htm != htm:
        raise CredentialRefused(f"the DPoP proof is for {claims.htm}, not {htm}", ERROR)
    if _normal_url(claims.htu) != _normal_url(htu):
        raise CredentialRefused(f"the DPoP proof is for {claims.htu}, not {htu}", ERROR)
    if not now - MAX_PROOF_AGE <= claims.iat <= now + skew:
        raise CredentialRefused(
            f"the DPoP proof was made {now - claims.iat:.0f} s ago; it must be fresh "
            f"(at most {MAX_PROOF_AGE:.0f} s)",
            ERROR,
        )
    if access_token is not None and claims.ath != token_hash(access_token):
        raise CredentialRefused("the DPoP proof is not bound to this token (ath)", ERROR)
    if not 12 <= len(claims.jti) <= 128:
        raise CredentialRefused("the DPoP proof needs a unique, random jti", ERROR)
    replay_key = hashlib.sha256(f"dpop:{jkt}:{claims.jti}".encode()).hexdigest()
    if not remember_once(replay_key, claims.iat + MAX_PROOF_AGE + skew):
        raise CredentialRefused(REPLAYED, ERROR)
    return jkt


def _signed_claims(proof: object) -> tuple[str, ProofClaims]:
    """The thumbprint of the key in the proof's header and the claims that key signed, checked
    once per proof text (SIGNED_MEMO)."""
    header = unverified_header(proof, "DPoP proof", ERROR)
    assert isinstance(proof, str)
    digest = hashlib.sha256(proof.encode()).digest()
    hit = _signed.get(digest)
    if hit is not None:
        return hit
    if header.get("typ") != PROOF_TYPE:
        raise CredentialRefused(
            f"the DPoP proof's typ is {header.get('typ')!r}, not {PROOF_TYPE}", ERROR
        )
    try:
        key = parse_public_jwk(header.get("jwk"))  # type: ignore[arg-type]
    except InvalidInput as exc:
        raise CredentialRefused(f"the DPoP proof's jwk: {exc}", ERROR) from exc
    payload = verified_payload(proof, key, "DPoP proof", ERROR)
    try:
        claims = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise CredentialRefused(f"the DPoP proof's claims are malformed: {exc}", ERROR) from exc
    signed = (parsed_thumbprint(header["jwk"]), claims)
    if len(_signed) >= SIGNED_MEMO:
        _signed.clear()  # a proof is read twice within one request: nothing older is needed
    _signed[digest] = signed
    return signed


def _normal_url(url: str) -> tuple[str, str, str]:
    """RFC 9449 section 4.3: compare without query and fragment; scheme and host ignore case."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError as exc:
        raise CredentialRefused(f"the DPoP proof's htu is not a URL: {exc}", ERROR) from exc
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    netloc = host if port in (None, default) else f"{host}:{port}"
    return parts.scheme.lower(), netloc, parts.path or "/"
