"""Agent identities: SPIFFE ids, the public keys agents prove themselves with (and their rotation),
and external identities (JWT-SVIDs from trusted SPIFFE trust domains)."""

from tether.identity.agent_keys import (
    register_key,
    revoke_key,
    rotate_key,
    usable_keys,
)
from tether.identity.jwk import generate_key, parse_public_jwk, public_jwk
from tether.identity.jwt_svid import check_bundle, verify_jwt_svid
from tether.identity.spiffe import agent_spiffe_id, check_trust_domain, parse_agent_spiffe_id

__all__ = [
    "agent_spiffe_id",
    "check_bundle",
    "check_trust_domain",
    "generate_key",
    "parse_agent_spiffe_id",
    "parse_public_jwk",
    "public_jwk",
    "register_key",
    "revoke_key",
    "rotate_key",
    "usable_keys",
    "verify_jwt_svid",
]
