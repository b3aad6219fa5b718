"""Public keys as JWKs (RFC 7517) named by their thumbprints (RFC 7638).

Agents and proofs present EC P-256 keys for ES256 (DESIGN.md section 4: SPIFFE JWT-SVIDs need
EC or RSA, and ES256 keeps signatures small and fast). A key offered as public must be public:
one carrying private members is refused, so a private key is never stored or echoed by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from tether.errors import InvalidInput

ALGORITHM = "ES256"
CURVE = "P-256"
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


def generate_key() -> ECKey:
    """A fresh ES256 private key, for an agent or a test."""
    return ECKey.generate_key(CURVE)


def public_jwk(key: ECKey) -> dict[str, Any]:
    """The public members only: what may be registered, published or put in a proof header."""
    members = key.as_dict(private=False)
    return {name: members[name] for name in ("kty", "crv", "x", "y")}


def thumbprint(key: ECKey) -> str:
    return key.thumbprint()


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
    return _imported(x, y).thumbprint()


@lru_cache(maxsize=4096)
def _imported(x: str, y: str) -> ECKey:
    """An agent signs every proof with the same key: importing it (a point check on the curve)
    once, not per call, saves a fifth of a remote call's cost. Only valid keys are kept."""
    return ECKey.import_key({"kty": "EC", "crv": CURVE, "x": x, "y": y})
