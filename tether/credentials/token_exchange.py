"""OAuth 2.0 Token Exchange (RFC 8693): how an agent gets a task token, and a sub-agent a narrower
one.

The subject token says on whose authority: a user's delegation grant (its id, token type
`GRANT_TOKEN_TYPE`), the user (their name, `USER_TOKEN_TYPE`: their live grant to the proven
actor that covers the scope, found as the embedded Guard finds it), or a parent task token being
delegated further. The actor token proves who
is asking: the agent's own signed assertion (RFC 7523) or a SPIFFE JWT-SVID. The new token is
computed, never copied from the request: its tools are what was asked for only if that is within
the parent's (or grant's) tools, the grant's and the agent's ceiling; its expiry is the earliest
of every bound above it; its audience is the parent's; its depth one more, up to `max_depth`.
A request for more is refused with what it asked beyond, not quietly narrowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from tether.credentials.access_token import AccessClaims
from tether.errors import CredentialRefused
from tether.model import Grant

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
GRANT_TOKEN_TYPE = "urn:tether:params:oauth:token-type:delegation-grant"
USER_TOKEN_TYPE = "urn:tether:params:oauth:token-type:user"
JWT_SVID_TOKEN_TYPE = "urn:tether:params:oauth:token-type:jwt-svid"


class ExchangeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The token request (RFC 8693 section 2.1), plus Tether's parameters: `request` (the
    user's words the task serves), `task_id` (renew that task's token instead of starting a
    task), `task_ttl` (how long a new task may run), `subject_proof` (when the subject is a
    task token: a DPoP proof for the token endpoint signed with that token's key, so only its
    holder can delegate it) and `decision_id` (a downstream token for the API `audience`, for
    that one allowed call of the subject token's task; see `Credentials.downstream`)."""

    subject_token: str
    subject_token_type: str
    actor_token: str
    actor_token_type: str = JWT_TOKEN_TYPE
    grant_type: str = GRANT_TYPE
    requested_token_type: str = ACCESS_TOKEN_TYPE
    scope: str | None = None
    audience: str | None = None
    request: str = ""
    task_id: str | None = None
    task_ttl: float | None = None
    subject_proof: str | None = None
    decision_id: str | None = None


class ExchangeResponse(msgspec.Struct, frozen=True):
    """RFC 8693 section 2.2.1, plus the task the token is for."""

    access_token: str
    issued_token_type: str
    token_type: str
    expires_in: int
    scope: str
    task_id: str


@dataclass(frozen=True)
class Bounds:
    """The most a token may carry: what its parent (or the grant, at the root) holds."""

    tools: frozenset[str]
    expires_at: float
    audience: str
    depth: int


def root_bounds(grant: Grant, audience: str) -> Bounds:
    return Bounds(frozenset(grant.tools), grant.expires_at, audience, 0)


def child_bounds(parent: AccessClaims, grant: Grant) -> Bounds:
    return Bounds(
        parent.tools & frozenset(grant.tools),
        min(parent.exp, grant.expires_at),
        parent.aud,
        parent.depth,
    )


def attenuate(
    bounds: Bounds,
    *,
    requested: frozenset[str] | None,
    ceiling: frozenset[str] | None,
    audience: str | None,
    lifetime: float,
    not_after: float,
    now: float,
    max_depth: int,
) -> Bounds:
    """The bounds of the new token, or CredentialRefused saying what was asked beyond.

    `ceiling`: the acting agent's tool ceiling (None: any); `not_after`: other ends (the task's)."""
    available = bounds.tools if ceiling is None else bounds.tools & ceiling
    tools = available if requested is None else requested
    beyond = sorted(tools - available)
    if beyond:
        outside = [t for t in beyond if t not in bounds.tools]
        why = (
            f"{outside} not held by the token or grant it is delegated from"
            if outside
            else "beyond the acting agent's ceiling"
        )
        raise CredentialRefused(f"scope asks for {beyond}: {why}", "invalid_scope")
    if not tools:
        raise CredentialRefused("the exchange would grant no tools", "invalid_scope")
    if audience is not None and audience != bounds.audience:
        raise CredentialRefused(
            f"audience {audience!r} is not the parent token's ({bounds.audience!r})",
            "invalid_target",
        )
    if bounds.depth + 1 > max_depth:
        raise CredentialRefused(
            f"the delegation chain would be {bounds.depth + 1} deep; at most {max_depth} allowed",
            "invalid_request",
        )
    expires_at = math.floor(min(now + lifetime, bounds.expires_at, not_after))
    if expires_at <= now:
        raise CredentialRefused("what this would be delegated from has expired", "invalid_grant")
    return Bounds(frozenset(tools), expires_at, bounds.audience, bounds.depth + 1)
