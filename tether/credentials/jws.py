"""Compact JWS (RFC 7515) read strictly, for every token, assertion and proof Tether accepts.

One place decides what a well-formed token is: ASCII, bounded in size, three base64url segments
without padding, a JSON object header with `alg` ES256 (never `none`, never a MAC: no algorithm
confusion) and no `crit` extension, and a 64-byte P-256 signature that verifies. Every failure is
a CredentialRefused naming what was wrong.

Reading and signing are done here, with `cryptography`, rather than by joserfc's general JWS
machinery: an agent signs a DPoP proof for every remote call and Tether reads it, and the
general path cost about three times the signature itself, each way (143 against 43 µs to sign,
measured in one process). joserfc still makes and holds the keys.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from joserfc.jwk import ECKey

from tether.errors import CredentialRefused
from tether.identity.jwk import ALGORITHM

MAX_TOKEN_BYTES = 8192
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_SIGNATURE_BYTES = 64  # ES256: r and s, 32 bytes each
_ECDSA = ec.ECDSA(hashes.SHA256())
_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode


class _Malformed(ValueError):
    pass


def _b64(segment: str) -> bytes:
    if len(segment) % 4 == 1 or not _SEGMENT.fullmatch(segment):
        raise _Malformed("a segment is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise _Malformed(f"a segment is not base64url: {exc}") from exc
    # One text per token: unused low bits in the last character would make another text of
    # the same signature (a proof that is "different" yet the same), so they must be zero.
    if _b64encode(raw) != segment:
        raise _Malformed("a segment is not canonical base64url")
    return raw


def _segments(token: object, what: str, error: str) -> list[str]:
    if not isinstance(token, str) or not token:
        raise CredentialRefused(f"no {what} was presented", error)
    if len(token) > MAX_TOKEN_BYTES or not token.isascii():
        raise CredentialRefused(f"the {what} is not a compact JWS of at most 8 KiB", error)
    segments = token.split(".")
    if len(segments) != 3:
        raise CredentialRefused(f"the {what} is malformed: not three segments", error)
    return segments


def unverified_header(token: object, what: str, error: str = "invalid_token") -> dict[str, Any]:
    """The header of a compact JWS, before its signature is checked (to choose the key)."""
    segments = _segments(token, what, error)
    try:
        header = _decode_json(_b64(segments[0]))
    except (_Malformed, msgspec.DecodeError, RecursionError) as exc:  # nested past decoding
        raise CredentialRefused(f"the {what} is malformed: {exc}", error) from exc
    if not isinstance(header, dict):
        raise CredentialRefused(f"the {what} is malformed: its header is not an object", error)
    if header.get("alg") != ALGORITHM:
        raise CredentialRefused(
            f"the {what} is signed with {header.get('alg')!r}; only {ALGORITHM} is accepted", error
        )
    if "crit" in header:
        raise CredentialRefused(f"the {what} names critical extensions; none is supported", error)
    return header


def unverified_payload(token: str, what: str = "token", error: str = "invalid_token") -> bytes:
    """The payload of a token whose header was read, before its signature is checked."""
    try:
        return _b64(_segments(token, what, error)[1])
    except _Malformed as exc:
        raise CredentialRefused(f"the {what} is malformed: {exc}", error) from exc


def verified_payload(token: str, key: ECKey, what: str, error: str = "invalid_token") -> bytes:
    """The payload of `token` if `key` verifies its signature."""
    unverified_header(token, what, error)
    head, body, signature = token.split(".")
    try:
        raw = _b64(signature)
        payload = _b64(body)
    except _Malformed as exc:
        raise CredentialRefused(f"the {what} is malformed: {exc}", error) from exc
    public = key.public_key
    if (
        len(raw) != _SIGNATURE_BYTES
        or not isinstance(public, ec.EllipticCurvePublicKey)
        or not isinstance(public.curve, ec.SECP256R1)
    ):
        raise CredentialRefused(f"the {what}'s signature does not verify", error)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    try:
        public.verify(encode_dss_signature(r, s), f"{head}.{body}".encode(), _ECDSA)
    except InvalidSignature as exc:
        raise CredentialRefused(f"the {what}'s signature does not verify", error) from exc
    return payload


def sign(header: dict[str, Any], payload: bytes, key: ECKey) -> str:
    """A compact JWS of `payload`, signed ES256 by the private `key`, `alg` put in `header`."""
    private = key.private_key
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(
        private.curve, ec.SECP256R1
    ):
        raise ValueError("signing needs a private EC P-256 key")
    signed = f"{_b64encode(_encode_json({'alg': ALGORITHM, **header}))}.{_b64encode(payload)}"
    r, s = decode_dss_signature(private.sign(signed.encode(), _ECDSA))
    return f"{signed}.{_b64encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
