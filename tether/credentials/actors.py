"""Who is asking for a token: an agent proving itself with its own signed assertion (RFC 7523
style) or with a SPIFFE JWT-SVID, and the key the new token will be bound to.

Nothing about the workspace, its agents or its grants is told to a caller before its proof has
verified: until then every failure reads the same, so the exchange cannot be used to probe which
agents exist or what state they are in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from tether.credentials.jws import unverified_payload
from tether.credentials.jwt_assertion import assertion_subject, verify_assertion
from tether.errors import CredentialRefused, InvalidInput
from tether.identity import parse_agent_spiffe_id, usable_keys, verify_jwt_svid
from tether.identity.jwk import parse_public_jwk
from tether.model import Agent, AgentStatus, KeyStatus
from tether.store import Store

MAX_SVID_TTL = 900  # a JWT-SVID presented as an actor token lives at most this long
UNPROVEN_SVID = (
    "the JWT-SVID does not prove an identity from a trust domain the subject's workspace trusts"
)


@dataclass(frozen=True)
class Actor:
    agent: Agent
    jkt: str  # the thumbprint of the key the new token is bound to
    key_end: float | None  # when that key stops verifying (a retiring key), if ever


def authenticate_actor(
    store: Store,
    *,
    token: str,
    token_type: str,
    jwt_type: str,
    svid_type: str,
    dpop_jkt: str | None,
    issuer: str,
    skew: float,
    now: float,
    subject_workspace: Callable[[], str],
) -> Actor:
    """The registered, active agent the actor token proves. `subject_workspace` names the
    workspace whose trust bundles check a JWT-SVID (an assertion names its own)."""
    if token_type == jwt_type:
        return _assertion(store, token, dpop_jkt, issuer=issuer, skew=skew, now=now)
    if token_type == svid_type:
        return _svid(
            store,
            token,
            dpop_jkt,
            workspace=subject_workspace,
            issuer=issuer,
            skew=skew,
            now=now,
        )
    raise CredentialRefused(
        f"actor_token_type must be {jwt_type} or {svid_type}", "invalid_request"
    )


def _assertion(
    store: Store, token: str, dpop_jkt: str | None, *, issuer: str, skew: float, now: float
) -> Actor:
    spiffe_id, kid = assertion_subject(token)
    unproven = CredentialRefused(
        f"the actor assertion is not signed by a usable key of {spiffe_id}", "invalid_client"
    )
    try:
        _, workspace, name = parse_agent_spiffe_id(spiffe_id)
    except InvalidInput as exc:
        raise unproven from exc
    key = next((k for k in usable_keys(store, workspace, name, now) if k.kid == kid), None)
    if key is None:
        raise unproven
    claims = verify_assertion(token, parse_public_jwk(key.jwk), audience=issuer, now=now, skew=skew)
    # Proven from here on: the reasons can be specific.
    agent = _active(store, workspace, name)
    if agent.spiffe_id != spiffe_id:
        raise CredentialRefused(f"{spiffe_id} is not agent {name}'s identity", "invalid_client")
    replay = hashlib.sha256(f"assertion:{spiffe_id}:{claims.jti}".encode()).hexdigest()
    if not store.credentials.remember_once(replay, claims.exp + skew, now):
        raise CredentialRefused("the actor assertion was already used (replay)", "invalid_client")
    if dpop_jkt is not None and dpop_jkt != kid:
        raise CredentialRefused(
            "the DPoP proof must be signed with the actor's key", "invalid_dpop_proof"
        )
    key_end = key.retire_at if key.status is KeyStatus.RETIRING else None
    return Actor(agent, kid, key_end)


def _svid(
    store: Store,
    token: str,
    dpop_jkt: str | None,
    *,
    workspace: Callable[[], str],
    issuer: str,
    skew: float,
    now: float,
) -> Actor:
    spiffe_id, subject_workspace = _proven_svid(store, token, workspace, issuer)
    claims = json.loads(unverified_payload(token, "JWT-SVID", "invalid_client"))  # verified
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        raise CredentialRefused("a JWT-SVID actor token needs iat and exp", "invalid_client")
    if now >= exp or iat > now + skew or exp - iat > MAX_SVID_TTL:
        raise CredentialRefused(
            f"a JWT-SVID actor token must be current and live at most {MAX_SVID_TTL} s",
            "invalid_client",
        )
    # Keyed on what it says, not its text: an ECDSA signature has a second valid form (s and
    # n - s), so one SVID has two texts.
    said = json.dumps([spiffe_id, claims.get("jti"), iat, exp, claims.get("aud")], sort_keys=True)
    replay = hashlib.sha256(f"svid:{said}".encode()).hexdigest()
    if not store.credentials.remember_once(replay, exp + skew, now):
        raise CredentialRefused("the JWT-SVID was already used (replay)", "invalid_client")
    name = store.credentials.identity(subject_workspace, spiffe_id)
    if name is None:
        raise CredentialRefused(
            f"{spiffe_id} is not mapped to an agent of workspace {subject_workspace}",
            "invalid_client",
        )
    if dpop_jkt is None:
        raise CredentialRefused(
            "a JWT-SVID actor must send a DPoP proof: the token is bound to its key",
            "invalid_dpop_proof",
        )
    return Actor(_active(store, subject_workspace, name), dpop_jkt, None)


def _proven_svid(
    store: Store, token: str, workspace: Callable[[], str], issuer: str
) -> tuple[str, str]:
    """The SPIFFE id a JWT-SVID proves, and the subject's workspace, whose trust bundles
    checked it. Until it verifies, every failure reads the same: whether the subject exists,
    and which trust domains its workspace trusts, are not told to an unproven caller."""
    try:
        subject_workspace = workspace()
        bundles = store.credentials.trust_bundles(subject_workspace)
        return verify_jwt_svid(token, audience=issuer, bundles=bundles), subject_workspace
    except CredentialRefused as exc:
        raise CredentialRefused(UNPROVEN_SVID, "invalid_client") from exc


def _active(store: Store, workspace: str, name: str) -> Agent:
    agent = store.agent(workspace, name)
    if agent is None:
        raise CredentialRefused(
            f"agent {name} is not registered in workspace {workspace}", "invalid_client"
        )
    if agent.status is not AgentStatus.ACTIVE:
        raise CredentialRefused(f"agent {name} is {agent.status.value}", "invalid_client")
    return agent
