"""What a downstream API needs to accept Tether-issued tokens: verification against Tether's JWKS.

Deliberately small and standalone (joserfc only), so a service can copy the idea or import it:

    verifier = TokenVerifier(jwks=fetch_jwks(), issuer="tether", audience="https://billing.acme")
    claims = verifier.verify(request.headers["Authorization"].removeprefix("Bearer "))
    claims["sub"], claims["scope"], claims["act"]   # the user, the one tool, the agent chain

It checks the signature by `kid` (ES256 only), `typ` at+jwt, the issuer, that the token is for
this audience and is a downstream token, and the time window with a small leeway for clocks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from tether.errors import CredentialRefused

Jwks = Mapping[str, Any]
REFETCH_AFTER = 10.0


class TokenVerifier:
    """`jwks`: the JWKS document, or a function returning the current one (it is called again
    when a token names a `kid` not seen yet, so a rotation needs no restart)."""

    def __init__(
        self,
        *,
        jwks: Jwks | Callable[[], Jwks],
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = jwks if callable(jwks) else (lambda: jwks)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._clock = clock
        self._keys: dict[str, ECKey] = {}
        self._loaded_at = float("-inf")
        self._load()

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raises CredentialRefused saying why it is not acceptable."""
        if not isinstance(token, str) or not token.isascii():
            raise CredentialRefused("malformed token: not ASCII text")
        try:
            compact = jws.extract_compact(token.encode())
        except (JoseError, ValueError) as exc:
            raise CredentialRefused(f"malformed token: {exc}") from exc
        header = compact.headers()
        if header.get("alg") != "ES256" or header.get("typ") != "at+jwt":
            raise CredentialRefused("not an ES256 at+jwt token")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise CredentialRefused("the token names no signing key (kid)")
        stale = not self._keys or self._clock() - self._loaded_at >= REFETCH_AFTER
        if kid not in self._keys and stale:
            self._load()  # a rotation, maybe; at most every REFETCH_AFTER s, whatever is sent
        key = self._keys.get(kid)
        if key is None:
            raise CredentialRefused(f"unknown signing key {kid!r}")
        try:
            payload = jws.deserialize_compact(token, key, algorithms=["ES256"]).payload
            claims: dict[str, Any] = json.loads(payload)
        except (JoseError, ValueError) as exc:
            raise CredentialRefused("the signature does not verify") from exc
        now = self._clock()
        if claims.get("iss") != self._issuer:
            raise CredentialRefused(f"issued by {claims.get('iss')!r}, not {self._issuer!r}")
        if claims.get("aud") != self._audience:
            raise CredentialRefused(f"the token is for {claims.get('aud')!r}, not this API")
        if claims.get("use") != "downstream":
            raise CredentialRefused("an agent's own task token is never accepted downstream")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or now >= exp + self._leeway:
            raise CredentialRefused("the token expired")
        if not isinstance(iat, int | float) or iat > now + self._leeway:
            raise CredentialRefused("the token is issued in the future")
        return claims

    def _load(self) -> None:
        keys = {}
        for jwk in self._fetch().get("keys", []):
            if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and "kid" in jwk:
                keys[jwk["kid"]] = ECKey.import_key({k: jwk[k] for k in ("kty", "crv", "x", "y")})
        self._keys = keys
        self._loaded_at = self._clock()
