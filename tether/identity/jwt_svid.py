"""External workload identity: SPIFFE JWT-SVIDs from trust domains a workspace trusts.

A workspace configures the trust domains it accepts and their JWKS bundles; an SVID from any other
domain is refused before its signature is even looked at. The `spiffe` package validates the
token against the bundle (signature, `kid`, `exp`, `aud`); an SVID's SPIFFE id then has to be
mapped to a registered agent, since policies and grants name agents, not SPIFFE ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from joserfc import jws
from spiffe import JwtBundle, JwtSvid, SpiffeId, TrustDomain

from tether.errors import CredentialRefused, InvalidInput

MAX_SVID_BYTES = 8192


def check_bundle(trust_domain: str, jwks: str) -> None:
    """Raises InvalidInput unless `jwks` is a JWKS document the `spiffe` package can use."""
    try:
        JwtBundle.parse(TrustDomain(trust_domain), jwks.encode())
    except Exception as exc:
        raise InvalidInput(f"not a usable JWKS bundle for {trust_domain}: {exc}") from exc


def verify_jwt_svid(token: str, *, audience: str, bundles: Mapping[str, str]) -> str:
    """The SPIFFE id a valid JWT-SVID proves; raises CredentialRefused with the reason.

    `bundles`: trust domain -> JWKS document, the domains the workspace accepts."""
    if not isinstance(token, str) or not token or len(token) > MAX_SVID_BYTES:
        raise CredentialRefused("the JWT-SVID is empty or too large", "invalid_client")
    try:
        claims = json.loads(jws.extract_compact(token.encode()).payload)
        spiffe_id = SpiffeId(claims["sub"])
    except Exception as exc:  # malformed in any of many ways: all are a refusal
        raise CredentialRefused(f"the JWT-SVID cannot be read: {exc}", "invalid_client") from exc
    domain = spiffe_id.trust_domain.name
    jwks = bundles.get(domain)
    if jwks is None:
        raise CredentialRefused(
            f"JWT-SVID from trust domain {domain!r}, which this workspace does not trust",
            "invalid_client",
        )
    try:
        bundle = JwtBundle.parse(TrustDomain(domain), jwks.encode())
        svid = JwtSvid.parse_and_validate(token, bundle, {audience})
    except Exception as exc:
        raise CredentialRefused(f"the JWT-SVID is not valid: {exc}", "invalid_client") from exc
    return str(svid.spiffe_id)
