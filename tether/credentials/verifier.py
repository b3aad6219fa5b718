"""What a downstream API needs to accept Tether-issued tokens: verification against Tether's JWKS.

Deliberately small and standalone (joserfc only), so a service can copy the idea or import it:

    verifier = TokenVerifier(jwks=fetch_jwks, issuer="tether", audience="https://billing.acme")
    claims = verifier.verify(request.headers["Authorization"].removeprefix("Bearer "))
    claims["sub"], claims["scope"], claims["act"]   # the user, the one tool, the agent chain

It checks the signature by `kid` (ES256 only), `typ` at+jwt, the issuer, that the token is for
this audience and is a downstream token, and the time window with a small leeway for clocks;
then that the token was not used before: Tether issues one downstream token per allowed call, so
each is good for one request.

The JWKS is trusted for `max_age` seconds (Tether's JWKS cache lifetime) and then fetched again:
a key Tether retires (rotated away after a leak, say) stops verifying here within that time,
and a new one arrives before it signs anything (Tether publishes it that long in advance).
"""

from __future__ import annotations

import heapq
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from tether.errors import CredentialRefused

Jwks = Mapping[str, Any]
REFETCH_AFTER = 10.0  # an unknown kid fetches the JWKS again, but not more often than this
MAX_AGE = 300.0  # how long a fetched JWKS is trusted: signing_keys.JWKS_MAX_AGE
REMEMBERED = 100_000  # live tokens' ids kept at once by the default replay cache
# Seconds of clock difference allowed on `exp` and `iat`. A downstream token cannot be revoked once
# minted (this check is the API's alone), so its life bounds it: the leeway is seconds, not half
# of that minute.
LEEWAY = 5.0

# Remember a token id until a time; False if it was already remembered (the token is replayed).
RememberOnce = Callable[[str, float], bool]


class TokenVerifier:
    """`jwks`: the JWKS document, or a function returning the current one (called again every
    `max_age` seconds, and when a token names a `kid` not seen yet, so a rotation needs no
    restart and a retired key is dropped; a fixed document is never refreshed).

    `remember_once`: where each token's `jti` is kept until the token expires, so it is accepted
    once. By default a set in this process holding at most REMEMBERED live ids (past that it
    refuses, rather than forget one that could be replayed); an API of several processes or
    replicas passes one they share (an insert that fails if the id is there), as Tether's own
    replay cache is a table."""

    def __init__(
        self,
        *,
        jwks: Jwks | Callable[[], Jwks],
        issuer: str,
        audience: str,
        leeway: float = LEEWAY,
        max_age: float = MAX_AGE,
        remember_once: RememberOnce | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = jwks if callable(jwks) else (lambda: jwks)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._max_age = max_age
        self._clock = clock
        self._keys: dict[str, ECKey] = {}
        self._loaded_at = float("-inf")
        self._remember_once = remember_once or _Remembered(REMEMBERED, clock)
        self._load()

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raises CredentialRefused saying why it is not acceptable. A
        token is accepted once: verifying it again refuses it as a replay."""
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
        key = self._key(kid)
        if key is None:
            raise CredentialRefused(f"unknown signing key {kid!r}")
        try:
            payload = jws.deserialize_compact(token, key, algorithms=["ES256"]).payload
            claims: dict[str, Any] = json.loads(payload)
        except (JoseError, ValueError) as exc:
            raise CredentialRefused("the signature does not verify") from exc
        return self._accepted(claims)

    def _accepted(self, claims: dict[str, Any]) -> dict[str, Any]:
        """The claims of a token whose signature verified, if they are for this API, now, and
        the token was not used before."""
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
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise CredentialRefused("the token has no id (jti): it cannot be used only once")
        # Until it would be refused as expired anyway: a replay cannot outlive that.
        if not self._remember_once(jti, exp + self._leeway):
            raise CredentialRefused(f"token {jti} was already used: one token, one call")
        return claims

    def _key(self, kid: str) -> ECKey | None:
        """The published key `kid`, from a JWKS at most `max_age` old; an unknown kid fetches
        it again (a rotation, maybe), at most every REFETCH_AFTER s, whatever is sent."""
        age = self._clock() - self._loaded_at
        unknown = kid not in self._keys and (not self._keys or age >= REFETCH_AFTER)
        if unknown or not 0 <= age < self._max_age:
            self._load()
        return self._keys.get(kid)

    def _load(self) -> None:
        """The keys the JWKS publishes now, and only those: a key it dropped is dropped here.
        A failed fetch refuses the token (the keys held may have been retired meanwhile)."""
        try:
            document = self._fetch()
            keys = {}
            for jwk in document.get("keys", []):
                if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and "kid" in jwk:
                    members = {k: jwk[k] for k in ("kty", "crv", "x", "y")}
                    keys[jwk["kid"]] = ECKey.import_key(members)
        except Exception as exc:
            raise CredentialRefused(f"Tether's JWKS could not be read: {exc}") from exc
        self._keys = keys
        self._loaded_at = self._clock()


class _Remembered:
    """The ids of live tokens seen, each until its token expires, at most `size` at once; each
    is forgotten once expired, the soonest first (a heap), so a check is a dict lookup plus
    what has expired since the last one."""

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self._size = size
        self._clock = clock
        self._until: dict[str, float] = {}
        self._expiring: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __call__(self, jti: str, until: float) -> bool:
        now = self._clock()
        with self._lock:
            while self._expiring and self._expiring[0][0] <= now:
                _, gone = heapq.heappop(self._expiring)
                if self._until.get(gone, now) <= now:
                    self._until.pop(gone, None)
            if self._until.get(jti, now) > now:
                return False
            if len(self._until) >= self._size:
                raise CredentialRefused(
                    f"{self._size} tokens are live and remembered already: try again once "
                    "one has expired"
                )
            self._until[jti] = until
            heapq.heappush(self._expiring, (until, jti))
            return True
