"""Short-lived, task-scoped credentials (DESIGN.md section 1, "Credential").

Modules are named after the standard they implement: `token_exchange` (RFC 8693),
`access_token` (RFC 9068), `jwt_assertion` (RFC 7523), `dpop` (RFC 9449), `jws` (RFC 7515);
`signing_keys` keeps the service's keys, `grants` the users' delegations, `revocation` what is
no longer valid, `verifier` is what a downstream API needs, and `service` ties them together.
"""

from tether.credentials.access_token import AccessClaims
from tether.credentials.dpop import check_proof, make_proof
from tether.credentials.grants import add_grant, find_grant, live_grant
from tether.credentials.jwt_assertion import make_assertion
from tether.credentials.service import Credentials, Issued, Settings
from tether.credentials.token_exchange import (
    ACCESS_TOKEN_TYPE,
    GRANT_TOKEN_TYPE,
    JWT_SVID_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    USER_TOKEN_TYPE,
    ExchangeRequest,
    ExchangeResponse,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "GRANT_TOKEN_TYPE",
    "JWT_SVID_TOKEN_TYPE",
    "JWT_TOKEN_TYPE",
    "USER_TOKEN_TYPE",
    "AccessClaims",
    "Credentials",
    "ExchangeRequest",
    "ExchangeResponse",
    "Issued",
    "Settings",
    "add_grant",
    "check_proof",
    "find_grant",
    "live_grant",
    "make_assertion",
    "make_proof",
]
