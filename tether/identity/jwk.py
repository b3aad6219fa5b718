"""Public keys as JWKs (RFC 7517) named by their thumbprints (RFC 7638).

Agents and proofs present EC P-256 keys for ES256 (DESIGN.md section 4: SPIFFE JWT-SVIDs need
EC or RSA, and ES256 keeps signatures small and fast). A key offered as public must be public:
one carrying private members is refused, so a private key is never stored or echoed by mistake.

A key has exactly one JWK and so one thumbprint: `x` and `y` must be the 32 bytes RFC 7518
section 6.2.1.2 requires, in their one canonical base64url text. Were a leading zero byte or a
set unused bit accepted, the same key would register under several kids, and revoking one would
leave it usable under another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from tether.errors import InvalidInput

ALGORITHM = "ES256"
CURVE = "P-256"
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")
COORDINATE_BYTES = 32  # P-256: RFC 7518 section 6.2.1.2, the full length, leading zeros kept
_COORDINATE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes in unpadded base64url


def generate_key() -> ECKey:
    """A fresh ES256 private key, for an agent or a test."""
    return ECKey.generate_key(CURVE)


def public_jwk(key: ECKey) -> dict[str, Any]:
    """The public members only: what may be registered, published or put in a proof header,
    encoded again from the key itself (never the text it was imported from)."""
    x, y = _coordinates(key)
    return {"kty": "EC", "crv": CURVE, "x": _b64(x), "y": _b64(y)}


def thumbprint(key: ECKey) -> str:
    """The key's RFC 7638 thumbprint, over its public members encoded again from the key: one
    key, one thumbprint, whatever text it arrived as."""
    x, y = _coordinates(key)
    return _rfc7638(x, y)


def parse_public_jwk(jwk: Mapping[str, Any]) -> ECKey:
    """A public ES256 key from its JWK; raises InvalidInput saying what is wrong."""
    if not isinstance(jwk, Mapping):
        raise InvalidInput("a key must be a JWK object")
    private = sorted(m for m in PRIVATE_MEMBERS if m in jwk)
    if private:
        raise InvalidInput(f"the JWK carries private members {private}: send the public key only")
    if jwk.get("kty") != "EC" or jwk.get("crv") != CURVE:
        raise InvalidInput(f"keys must be EC {CURVE} (ES256); got kty={jwk.get('kty')!r}")
    x, y = jwk.get("x"), jwk.get("y")
    if not isinstance(x, str) or not isinstance(y, str):
        raise InvalidInput(f"not a valid EC {CURVE} public key: x and y are base64url strings")
    for name, text in (("x", x), ("y", y)):
        if not _canonical(text):
            raise InvalidInput(
                f"not a valid EC {CURVE} public key: {name} must be exactly {COORDINATE_BYTES} "
                "bytes in unpadded base64url (RFC 7518 section 6.2.1.2)"
            )
    try:
        return _imported(x, y)
    except (ValueError, TypeError, JoseError) as exc:
        raise InvalidInput(f"not a valid EC {CURVE} public key: {exc}") from exc


def parsed_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint of a JWK that `parse_public_jwk` accepted: computed once per key,
    like the import (a DPoP proof names its key on every call)."""
    return _thumbprint(jwk["x"], jwk["y"])


@lru_cache(maxsize=4096)
def _thumbprint(x: str, y: str) -> str:
    return thumbprint(_imported(x, y))


@lru_cache(maxsize=4096)
def _imported(x: str, y: str) -> ECKey:
    """An agent signs every proof with the same key: importing it (a point check on the curve)
    once, not per call, saves a fifth of a remote call's cost. Only valid keys are kept."""
    return ECKey.import_key({"kty": "EC", "crv": CURVE, "x": x, "y": y})


def _canonical(text: str) -> bool:
    """`text` is the one base64url text of 32 bytes: 43 characters, no padding, and its unused
    low bits zero (decoding ignores them, so a text with them set is another text of the same
    bytes)."""
    if not _COORDINATE.fullmatch(text):
        return False
    return _b64(base64.urlsafe_b64decode(text + "=")) == text


def _coordinates(key: ECKey) -> tuple[bytes, bytes]:
    numbers = key.public_key.public_numbers()
    return (
        numbers.x.to_bytes(COORDINATE_BYTES, "big"),
        numbers.y.to_bytes(COORDINATE_BYTES, "big"),
    )


def _rfc7638(x: bytes, y: bytes) -> str:
    """RFC 7638 section 3: SHA-256 of the required members, in lexicographic order, no spaces."""
    members = {"crv": CURVE, "kty": "EC", "x": _b64(x), "y": _b64(y)}
    text = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(text.encode()).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
