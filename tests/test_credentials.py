"""Workload identity and task credentials, end to end on a real store: token exchange, delegation
chains, DPoP, revocation, key rotation, JWT-SVIDs and downstream tokens (DESIGN.md section 6:
"a replayed, expired, revoked, tampered or wrong-audience credential or proof is refused")."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from conftest import Clock
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import ECKey

from tether import Guard
from tether.credentials import (
    ACCESS_TOKEN_TYPE,
    GRANT_TOKEN_TYPE,
    JWT_SVID_TOKEN_TYPE,
    ExchangeRequest,
    check_proof,
    make_assertion,
    make_proof,
)
from tether.credentials import access_token as access_tokens
from tether.credentials import verifier as verifier_module
from tether.credentials.access_token import AccessClaims
from tether.credentials.actors import UNPROVEN_SVID
from tether.credentials.jws import sign as sign_jws
from tether.credentials.service import MAX_SKEW, MAX_TOKEN_TTL, Settings
from tether.credentials.signing_keys import EARLY_READ, JWKS_MAX_AGE, REFRESH, Keyring
from tether.credentials.verifier import LEEWAY, TokenVerifier
from tether.errors import Conflict, CredentialRefused, InvalidInput, TetherError
from tether.identity import generate_key, parse_public_jwk, public_jwk, register_key, rotate_key
from tether.identity.agent_keys import (
    CLOCKS_DIFFER,
    MAX_KEYS,
    TOKENS_OUTLIVE_A_KEY,
    key_subject,
)
from tether.identity.jwk import parsed_thumbprint, thumbprint
from tether.model import Effect, Stage
from tether.pdp import PDP, AuthorizeRequest, ProofRule
from tether.store import Store
from tether.store.credentials import SigningKeyRecord

HTU = "https://tether.test/v1/authorize"
PERMIT_ALL = {"all.cedar": "permit (principal, action, resource);"}
TOOLS = ("read_file", "write_file", "send_email", "pay")


def _setup(guard: Guard) -> None:
    guard.add_workspace("acme")
    guard.add_workspace("beta")
    for ws in ("acme", "beta"):
        for agent in ("planner", "coder", "tester", "rogue"):
            guard.register_agent(ws, agent, kind=agent, owner="alice@acme.com")
        guard.register_agent(
            ws, "narrow", kind="coder", owner="alice@acme.com", ceiling=["read_file"]
        )
        for tool in TOOLS:
            guard.register_tool(ws, tool, effects=["read"])
        guard.activate_policies(ws, PERMIT_ALL)
        guard.add_user(ws, "alice")


@pytest.fixture
def guard(home: Path, clock: Clock) -> Iterator[Guard]:
    with Guard(Store.at_home(home), clock=clock) as g:
        _setup(g)
        yield g


def grant(guard: Guard, ws: str = "acme", **kw: Any) -> str:
    spec: dict[str, Any] = {
        "user": "alice",
        "agent": "planner",
        "tools": TOOLS,
        "may_act": ("coder", "tester", "narrow"),
        "max_ttl": 3600,
    }
    return guard.grant(ws, **{**spec, **kw}).id


def exchange(
    guard: Guard,
    subject: str,
    agent: str,
    *,
    ws: str = "acme",
    key: ECKey | None = None,
    **kw: Any,
) -> tuple[str, AccessClaims]:
    """An exchange as an agent makes it: its own assertion as the actor token and, to delegate a
    task token, a proof that the delegator holds it (by default made with the holder's key)."""
    key = key or guard.agent_keys.get(ws, agent)
    assertion = make_assertion(
        key,
        agent_id=f"spiffe://tether.local/ws/{ws}/agent/{agent}",
        audience="tether",
        now=guard._clock(),
    )
    subject_type = GRANT_TOKEN_TYPE if subject.startswith("grant_") else ACCESS_TOKEN_TYPE
    dpop_jkt = kw.pop("dpop_jkt", None)
    if subject_type == ACCESS_TOKEN_TYPE and "subject_proof" not in kw:
        held = _claims_of(subject)
        holder = guard.agent_keys.get(held["ws"], held["agent"])
        kw["subject_proof"] = make_proof(
            holder, htm="POST", htu="tether:token", now=guard._clock(), access_token=subject
        )
    issued = guard.credentials.exchange(
        ExchangeRequest(
            subject_token=subject, subject_token_type=subject_type, actor_token=assertion, **kw
        ),
        dpop_jkt=dpop_jkt,
    )
    return issued.response.access_token, issued.claims


def proof_for(guard: Guard, token: str, agent: str = "planner", ws: str = "acme") -> str:
    return make_proof(
        guard.agent_keys.get(ws, agent), htm="POST", htu=HTU, now=guard._clock(), access_token=token
    )


def proof_for_endpoint(guard: Guard, token: str, agent: str = "planner") -> str:
    """A proof of holding `token`, for the token endpoint (delegation, downstream tokens)."""
    key = guard.agent_keys.get("acme", agent)
    return make_proof(key, htm="POST", htu="tether:token", now=guard._clock(), access_token=token)


def authenticate(guard: Guard, token: str, proof: str | None) -> AccessClaims:
    return guard.credentials.authenticate(
        token, proof=proof, htm="POST", htu=HTU, require_proof=True
    )


def refused(match: str) -> Any:
    return pytest.raises(CredentialRefused, match=match)


# -- the issued token ------------------------------------------------------------------------------


def test_a_task_token_carries_the_delegation(guard: Guard) -> None:
    token, claims = exchange(guard, grant(guard), "planner", scope="read_file send_email")
    header = jws.extract_compact(token.encode()).headers()
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    assert header["kid"] in {k["kid"] for k in guard.credentials.jwks()["keys"]}
    assert claims.sub == "alice" and claims.ws == "acme" and claims.aud == "tether:pdp"
    assert claims.tools == {"read_file", "send_email"}
    assert claims.act == {"sub": "spiffe://tether.local/ws/acme/agent/planner"}
    assert claims.jkt == guard.agent_keys.get("acme", "planner").thumbprint()
    assert claims.exp - claims.iat == 300  # five minutes by default
    task = guard.store.task(claims.task)
    assert (
        task is not None
        and task.grant == claims.grant
        and task.tools == ("read_file", "send_email")
    )
    assert authenticate(guard, token, proof_for(guard, token)).jti == claims.jti


def test_a_sub_agent_gets_a_narrower_token_with_the_actor_chain(guard: Guard) -> None:
    parent, p = exchange(guard, grant(guard), "planner", scope="read_file send_email")
    child, c = exchange(guard, parent, "coder", scope="read_file")
    assert c.act == {"sub": "spiffe://tether.local/ws/acme/agent/coder", "act": p.act}
    assert c.tools == {"read_file"} and c.exp <= p.exp and c.aud == p.aud
    assert c.depth == p.depth + 1 and c.chain == (p.jti,) and c.tasks == (p.task,)
    assert c.jkt == guard.agent_keys.get("acme", "coder").thumbprint()
    child_task = guard.store.task(c.task)
    assert child_task is not None and child_task.parent == p.task
    # The parent's token is bound to the planner's key: the coder holding it cannot use it.
    with refused("another key than the token is bound to"):
        authenticate(guard, parent, proof_for(guard, parent, agent="coder"))
    assert authenticate(guard, child, proof_for(guard, child, agent="coder")).task == c.task


def test_attenuation_is_enforced_not_trusted(guard: Guard, clock: Clock) -> None:
    g = grant(guard, tools=("read_file", "send_email"))
    parent, _ = exchange(guard, g, "planner", scope="read_file")
    with refused(r"\['send_email'\] not held by the token"):
        exchange(guard, parent, "coder", scope="read_file send_email")
    with refused(r"\['pay'\] not held"):
        exchange(guard, g, "planner", scope="pay")
    full, _ = exchange(guard, g, "planner")
    with refused(r"\['send_email'\]: beyond the acting agent's ceiling"):
        exchange(guard, full, "narrow", scope="send_email")
    with refused("is not the parent token's"):
        exchange(guard, parent, "coder", audience="https://elsewhere")
    with refused("does not let agent rogue act"):
        exchange(guard, parent, "rogue")
    with refused("delegates to agent planner, not coder"):
        exchange(guard, g, "coder")
    # Without a scope, the sub-agent gets what the parent holds, cut to its ceiling.
    _, narrowed = exchange(guard, full, "narrow")
    assert narrowed.tools == {"read_file"}


def test_the_chain_has_a_maximum_depth(guard: Guard) -> None:
    token, claims = exchange(guard, grant(guard), "planner")
    for agent in ("coder", "tester", "coder"):
        token, claims = exchange(guard, token, agent)
    assert claims.depth == 4
    with refused("would be 5 deep; at most 4"):
        exchange(guard, token, "tester")


def test_expiry_never_outlives_the_parent_the_task_or_the_grant(guard: Guard, clock: Clock) -> None:
    g = grant(guard, max_ttl=600, expires_in=1000)
    parent, p = exchange(guard, g, "planner", task_ttl=120)
    assert p.exp == int(clock.now) + 120  # the task ends before five minutes
    clock.now += 100
    _, c = exchange(guard, parent, "coder")
    assert c.exp <= p.exp
    with refused("task_ttl must be between 0 and the grant's max_ttl"):
        exchange(guard, g, "planner", task_ttl=601)
    clock.now += 1000
    with refused("expired"):
        exchange(guard, g, "planner")


def test_a_task_token_is_renewed_for_the_same_task_only_within_it(
    guard: Guard, clock: Clock
) -> None:
    g = grant(guard)
    _, first = exchange(guard, g, "planner", scope="read_file", task_ttl=900)
    clock.now += 290
    _, renewed = exchange(guard, g, "planner", task_id=first.task)
    assert renewed.task == first.task and renewed.jti != first.jti
    assert renewed.tools == {"read_file"} and renewed.exp > first.exp
    with refused(r"not granted to task"):
        exchange(guard, g, "planner", task_id=first.task, scope="read_file pay")
    with refused("is not a task of this agent under this grant"):
        exchange(guard, grant(guard), "planner", task_id=first.task)


def test_the_guard_renews_its_task_token_transparently(guard: Guard, clock: Clock) -> None:
    grant(guard)
    with guard.task(
        workspace="acme", agent="planner", user="alice", request="r", tools=["read_file"], ttl=1800
    ) as task:
        first = task.claims
        for _ in range(5):  # 20 minutes, four token lifetimes
            clock.now += 240
            assert task.authorize("read_file", {}).allowed
        assert task.claims.task == first.task and task.claims.jti != first.jti


# -- the actor's proof of identity -------------------------------------------------------------------


def test_an_assertion_is_good_for_one_exchange(guard: Guard) -> None:
    key = guard.agent_keys.get("acme", "planner")
    assertion = make_assertion(
        key,
        agent_id="spiffe://tether.local/ws/acme/agent/planner",
        audience="tether",
        now=guard._clock(),
    )
    request = ExchangeRequest(
        subject_token=grant(guard), subject_token_type=GRANT_TOKEN_TYPE, actor_token=assertion
    )
    guard.credentials.exchange(request)
    with refused("already used"):
        guard.credentials.exchange(request)


def test_assertions_are_refused_for_the_wrong_key_audience_agent_or_workspace(
    guard: Guard, clock: Clock
) -> None:
    g = grant(guard)
    stranger = generate_key()
    with refused("not signed by a usable key of spiffe://tether.local/ws/acme/agent/planner"):
        exchange(guard, g, "planner", key=stranger)

    def assertion(agent_id: str, audience: str = "tether", now: float | None = None) -> str:
        key = guard.agent_keys.get("acme", "planner")
        return make_assertion(key, agent_id=agent_id, audience=audience, now=now or clock.now)

    def attempt(actor_token: str) -> None:
        guard.credentials.exchange(
            ExchangeRequest(
                subject_token=g, subject_token_type=GRANT_TOKEN_TYPE, actor_token=actor_token
            )
        )

    planner = "spiffe://tether.local/ws/acme/agent/planner"
    with refused("is for 'somebody-else'"):
        attempt(assertion(planner, audience="somebody-else"))
    with refused("expired"):
        attempt(assertion(planner, now=clock.now - 120))
    # Before its signature verifies, an assertion learns nothing: not whether the agent exists,
    # nor in which workspace.
    for claimed in ("spiffe://tether.local/ws/beta/agent/planner", "spiffe://tether.local/planner"):
        with refused(f"not signed by a usable key of {claimed}$"):
            attempt(assertion(claimed))


def test_agent_keys_rotate_with_an_overlap(guard: Guard, clock: Clock) -> None:
    old = guard.agent_keys.get("acme", "planner")
    new = generate_key()
    rotate_key(
        guard.store,
        workspace="acme",
        agent="planner",
        jwk=public_jwk(new),
        now=clock.now,
        overlap=60,
    )
    g = grant(guard)
    exchange(guard, g, "planner", key=old)  # still inside the overlap
    exchange(guard, g, "planner", key=new)
    clock.now += 61
    with refused("not signed by a usable key"):
        exchange(guard, g, "planner", key=old)
    exchange(guard, g, "planner", key=new)


def test_a_private_key_is_never_registered(guard: Guard) -> None:
    with pytest.raises(InvalidInput, match="private members"):
        register_key(
            guard.store,
            workspace="acme",
            agent="coder",
            jwk=generate_key().as_dict(private=True),
            now=0,
        )
    with pytest.raises(InvalidInput, match="EC P-256"):
        register_key(
            guard.store,
            workspace="acme",
            agent="coder",
            jwk={"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            now=0,
        )


# -- refusals, each with its own reason ---------------------------------------------------------------


def test_an_expired_token_is_refused(guard: Guard, clock: Clock) -> None:
    token, _ = exchange(guard, grant(guard), "planner")
    clock.now += 301
    with refused("the token expired"):
        authenticate(guard, token, proof_for(guard, token))


def test_a_wrong_audience_is_refused(guard: Guard) -> None:
    grant(guard)
    with guard.task(
        workspace="acme", agent="planner", user="alice", request="", tools=["pay"]
    ) as t:
        downstream = t.downstream_token(t.authorize("pay", {}), "https://bank.example")
        with refused("wrong audience: the token is for 'https://bank.example'"):
            authenticate(guard, downstream, proof_for(guard, downstream))


def test_a_replayed_proof_is_refused_even_by_another_process(guard: Guard, home: Path) -> None:
    token, _ = exchange(guard, grant(guard), "planner")
    proof = proof_for(guard, token)
    authenticate(guard, token, proof)
    with refused("already used"):
        authenticate(guard, token, proof)
    other = Guard(Store.at_home(home), clock=guard._clock)  # a second process on the store
    try:
        fresh = proof_for(guard, token)
        authenticate(other, token, fresh)
        with refused("already used"):
            authenticate(guard, token, fresh)
    finally:
        other.close()


def test_proofs_are_checked_in_full(guard: Guard, clock: Clock) -> None:
    token, _ = exchange(guard, grant(guard), "planner")
    key = guard.agent_keys.get("acme", "planner")

    def proof(**kw: Any) -> str:
        spec: dict[str, Any] = {"htm": "POST", "htu": HTU, "now": clock.now, "access_token": token}
        return make_proof(key, **{**spec, **kw})

    with refused("is for GET, not POST"):
        authenticate(guard, token, proof(htm="GET"))
    with refused("is for https://evil.test/v1/authorize"):
        authenticate(guard, token, proof(htu="https://evil.test/v1/authorize"))
    with refused("must be fresh"):
        authenticate(guard, token, proof(now=clock.now - 120))
    with refused("not bound to this token"):
        authenticate(guard, token, proof(access_token="another"))
    with refused("another key than the token is bound to"):
        authenticate(
            guard,
            token,
            make_proof(generate_key(), htm="POST", htu=HTU, now=clock.now, access_token=token),
        )
    with refused("no DPoP proof was presented"):
        authenticate(guard, token, None)
    # Query and fragment do not count (RFC 9449 section 4.3); scheme and host ignore case.
    authenticate(guard, token, proof(htu="HTTPS://Tether.TEST:443/v1/authorize?x=1#f"))
    # A proof header carrying the private key is refused.
    private = key.as_dict(private=True)
    body = json.dumps({"jti": "x" * 20, "htm": "POST", "htu": HTU, "iat": int(clock.now)}).encode()
    leaky = jws.serialize_compact({"alg": "ES256", "typ": "dpop+jwt", "jwk": private}, body, key)
    with refused("private members"):
        authenticate(guard, token, leaky)
    wrong_type = jws.serialize_compact(
        {"alg": "ES256", "typ": "JWT", "jwk": public_jwk(key)}, body, key
    )
    with refused("typ is 'JWT'"):
        authenticate(guard, token, wrong_type)


def _flip(text: str, position: int, bit: int) -> str:
    flipped = chr(ord(text[position]) ^ (1 << bit))
    return text[:position] + flipped + text[position + 1 :]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_flipping_any_byte_of_a_token_or_proof_is_refused(
    guard: Guard, data: st.DataObject
) -> None:
    if not hasattr(guard, "_flip_token"):
        token, _ = exchange(guard, grant(guard), "planner")
        guard._flip_token = token  # type: ignore[attr-defined]
    token = guard._flip_token  # type: ignore[attr-defined]
    which = data.draw(st.sampled_from(["token", "proof"]))
    proof = proof_for(guard, token)
    target = token if which == "token" else proof
    position = data.draw(st.integers(0, len(target) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = _flip(target, position, bit)
    with pytest.raises(CredentialRefused):
        if which == "token":
            authenticate(guard, tampered, proof)
        else:
            authenticate(guard, token, tampered)


def test_every_single_byte_flip_of_a_token_is_refused(guard: Guard) -> None:
    """Exhaustive over positions (hypothesis samples bits above): not one flipped token passes,
    including the base64 padding bits of each segment's last character."""
    token, _ = exchange(guard, grant(guard), "planner")
    for position in range(len(token)):
        with pytest.raises(CredentialRefused):
            guard.credentials.authenticate(_flip(token, position, 0))
    assert guard.credentials.authenticate(token).sub == "alice"


def test_a_token_from_another_workspace_is_refused(guard: Guard) -> None:
    grant(guard, ws="beta")
    with guard.task(
        workspace="beta", agent="planner", user="alice", request="", tools=["read_file"]
    ) as t:
        d = guard.authorize(None, "read_file", {}, workspace="acme", token=t.token)
    assert d.effect is Effect.DENY and d.reasons[0].stage is Stage.WORKSPACE
    assert (
        "belongs to workspace beta (its token was issued there); it cannot act in acme" in d.reason
    )


def test_a_suspended_agents_tokens_are_refused(guard: Guard, clock: Clock) -> None:
    parent, _ = exchange(guard, grant(guard), "planner")
    child, _ = exchange(guard, parent, "coder")
    guard.suspend_agent("acme", "planner")
    with refused("agent planner was suspended"):
        guard.credentials.authenticate(parent)
    with refused("agent planner was suspended"):  # it delegated the coder's token
        guard.credentials.authenticate(child)
    with refused("agent planner is suspended"):
        exchange(guard, grant(guard), "planner")
    guard.resume_agent("acme", "planner")
    with refused("agent planner was suspended"):  # resuming does not bring old tokens back
        guard.credentials.authenticate(parent)
    with refused("the token would be revoked"):  # within the clock skew of the suspension
        exchange(guard, grant(guard), "planner")
    clock.now += 31  # past the 30 s of clock skew a token's iat is allowed
    fresh, _ = exchange(guard, grant(guard), "planner")
    guard.credentials.authenticate(fresh)


def test_suspension_ends_the_agents_tasks_and_denies_its_calls(guard: Guard) -> None:
    grant(guard)
    with guard.task(
        workspace="acme", agent="planner", user="alice", request="", tools=["read_file"]
    ) as t:
        assert t.authorize("read_file", {}).allowed
        guard.suspend_agent("acme", "planner")
        d = t.authorize("read_file", {})
    assert d.effect is Effect.DENY and d.reasons[0].stage is Stage.AUTHENTICATE
    assert "agent planner was suspended" in d.reason
    stored = guard.store.task(t.id)
    assert stored is not None and stored.status.value == "revoked"
    assert guard.store.decisions(limit=1)[0].task_id == t.id  # the denial is the task's


# -- revocation --------------------------------------------------------------------------------------


def test_revoking_a_parent_refuses_every_descendant(guard: Guard) -> None:
    g = grant(guard)
    root, r = exchange(guard, g, "planner")
    child, _ = exchange(guard, root, "coder")
    grandchild, _ = exchange(guard, child, "tester")
    sibling_root, _ = exchange(guard, g, "planner")
    for token in (root, child, grandchild):
        guard.credentials.authenticate(token)  # cached as verified from here on
    guard.credentials.revoke_token(r.jti)
    for token in (root, child, grandchild):
        with refused("revoked"):
            guard.credentials.authenticate(token)
    with refused("revoked"):
        exchange(guard, root, "coder")
    guard.credentials.authenticate(sibling_root)  # another token of the grant is untouched


def test_revoking_a_task_revokes_its_subtasks_and_their_renewals(guard: Guard) -> None:
    g = grant(guard)
    root, r = exchange(guard, g, "planner")
    child, c = exchange(guard, root, "coder")
    guard.revoke_task(r.task)
    with refused(f"task {r.task} was revoked"):
        guard.credentials.authenticate(child)
    with refused("revoked"):
        exchange(guard, g, "planner", task_id=r.task)
    for task_id in (r.task, c.task):
        stored = guard.store.task(task_id)
        assert stored is not None and stored.status.value == "revoked"


def test_revoking_a_grant_or_a_workspace(guard: Guard) -> None:
    g = grant(guard)
    token, _ = exchange(guard, g, "planner")
    guard.revoke_grant(g)
    with refused("revoked by its user"):
        guard.credentials.authenticate(token)
    with refused("revoked by its user"):
        exchange(guard, g, "planner")
    token, _ = exchange(guard, grant(guard), "planner")
    guard.credentials.revoke_workspace("acme")
    with refused("every credential of workspace acme"):
        guard.credentials.authenticate(token)


def test_a_revocation_reaches_another_process_within_the_poll_interval(
    guard: Guard, home: Path, clock: Clock
) -> None:
    token, claims = exchange(guard, grant(guard), "planner")
    other = Guard(Store.at_home(home), clock=clock)
    try:
        other.credentials.authenticate(token)
        guard.credentials.revoke_token(claims.jti)
        clock.now += 0.3  # past the 0.25 s poll interval
        with refused("revoked"):
            other.credentials.authenticate(token)
    finally:
        other.close()


# -- the service's signing keys -------------------------------------------------------------------------


def test_key_rotation_publishes_first_and_retires_after_the_last_token(
    guard: Guard, clock: Clock
) -> None:
    keyring = guard.credentials.keyring
    token, _ = exchange(guard, grant(guard), "planner")
    old = keyring.signing_key(clock.now)
    new = keyring.rotate(clock.now, lead=300)
    published = {k["kid"] for k in guard.credentials.jwks()["keys"]}
    assert {old.kid, new.kid} <= published  # published before it signs
    assert keyring.signing_key(clock.now).kid == old.kid
    clock.now += 300
    assert keyring.signing_key(clock.now).kid == new.kid
    signed_now, _ = exchange(guard, grant(guard), "planner")
    assert jws.extract_compact(signed_now.encode()).headers()["kid"] == new.kid
    assert old.retire_at is None and keyring.verification_key(old.kid, clock.now) is not None
    # The longest token life allowed, plus twice the clock skew, plus how long a process takes
    # to hear.
    retire_at = new.activate_at + 3600 + 2 * 30 + REFRESH + EARLY_READ
    # A token signed by the old key just before the switch stays valid until it expires...
    clock.now = retire_at - 31
    late = AccessClaims(**{**_claims_of(token), "exp": int(retire_at + 600), "jti": "tok_late"})
    late_token = access_tokens.issue(late, keyring.verification_key(old.kid, clock.now))  # type: ignore[arg-type]
    assert guard.credentials.authenticate(late_token).jti == "tok_late"
    # ... and nothing signed with it is accepted once it has retired, cached or not.
    clock.now = retire_at
    with refused("unknown or retired key"):
        guard.credentials.authenticate(late_token)
    assert old.kid not in {k["kid"] for k in guard.credentials.jwks()["keys"]}


def _claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_signing_keys_are_encrypted_at_rest(guard: Guard, home: Path) -> None:
    guard.credentials.keyring.signing_key(guard._clock())
    record = guard.store.credentials.signing_keys()[0]
    assert "PRIVATE KEY" not in record.private_key and "d" not in record.public_jwk
    with pytest.raises(TetherError, match="cannot be decrypted"):
        Guard(Store.at_home(home), master_key=b"\0" * 32)
    assert (home / "master.key").stat().st_mode & 0o777 == 0o600


# -- external identities: SPIFFE JWT-SVIDs ----------------------------------------------------------------


def _svid(key: ECKey, spiffe_id: str, audience: str, exp: float) -> str:
    claims = {"sub": spiffe_id, "aud": [audience], "exp": int(exp), "iat": int(exp) - 60}
    body = json.dumps(claims).encode()
    return jws.serialize_compact({"alg": "ES256", "typ": "JWT", "kid": "k1"}, body, key)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _other_signature(token: str) -> str:
    """The same token with its ECDSA signature (r, s) as (r, n - s): valid as well."""
    head, body, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    s = P256_ORDER - int.from_bytes(raw[32:], "big")
    other = raw[:32] + s.to_bytes(32, "big")
    return f"{head}.{body}.{base64.urlsafe_b64encode(other).rstrip(b'=').decode()}"


def test_a_jwt_svid_proves_a_mapped_agent_from_a_trusted_domain(guard: Guard, clock: Clock) -> None:
    authority = generate_key()
    bundle = json.dumps({"keys": [{**public_jwk(authority), "kid": "k1", "use": "jwt-svid"}]})
    guard.store.credentials.put_trust_bundle("acme", "prod.example", bundle, clock.now)
    guard.store.credentials.map_identity(
        "acme", "spiffe://prod.example/ns/ci/sa/planner", "planner"
    )
    dpop_key = generate_key()
    g = grant(guard)

    def attempt(svid: str, jkt: str | None = dpop_key.thumbprint()) -> AccessClaims:
        return guard.credentials.exchange(
            ExchangeRequest(
                subject_token=g,
                subject_token_type=GRANT_TOKEN_TYPE,
                actor_token=svid,
                actor_token_type=JWT_SVID_TOKEN_TYPE,
            ),
            dpop_jkt=jkt,
        ).claims

    good = _svid(authority, "spiffe://prod.example/ns/ci/sa/planner", "tether", clock.now + 60)
    claims = attempt(good)
    assert claims.agent == "planner" and claims.jkt == dpop_key.thumbprint()
    with refused(UNPROVEN_SVID):  # from a domain the workspace does not trust
        attempt(
            _svid(authority, "spiffe://evil.example/ns/ci/sa/planner", "tether", clock.now + 60)
        )
    with refused("not mapped to an agent"):
        attempt(_svid(authority, "spiffe://prod.example/ns/ci/sa/other", "tether", clock.now + 60))
    with refused(UNPROVEN_SVID):  # signed by a key its domain's bundle does not hold
        attempt(
            _svid(
                generate_key(), "spiffe://prod.example/ns/ci/sa/planner", "tether", clock.now + 60
            )
        )
    with refused("already used"):  # an SVID is a bearer token: each is good for one exchange
        attempt(good)
    with refused("already used"):  # nor does its signature's other valid form make it new
        attempt(_other_signature(good))
    fresh = _svid(authority, "spiffe://prod.example/ns/ci/sa/planner", "tether", clock.now + 59)
    with refused("must send a DPoP proof"):
        attempt(fresh, jkt=None)
    long_lived = json.dumps(
        {
            "sub": "spiffe://prod.example/ns/ci/sa/planner",
            "aud": ["tether"],
            "iat": int(clock.now),
            "exp": int(clock.now) + 86400,
        }
    ).encode()
    with refused("live at most 900 s"):
        attempt(
            jws.serialize_compact(
                {"alg": "ES256", "typ": "JWT", "kid": "k1"}, long_lived, authority
            )
        )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    subject=st.sampled_from(["acme", "beta", "grant_doesnotexist", "unreadable"]),
    domain=st.sampled_from(["prod.example", "guess.example", "x.invalid"]),
    signer=st.sampled_from(["trusted authority", "anyone"]),
)
def test_an_unproven_jwt_svid_learns_nothing(
    guard: Guard, clock: Clock, subject: str, domain: str, signer: str
) -> None:
    """Before an SVID verifies, whichever subject it names (a grant that exists, in a workspace
    trusting that domain or not, or none) and whoever signed it, the refusal is one and the
    same: no grant's existence, nor which domains a workspace trusts, can be probed."""
    if not hasattr(guard, "_authority"):
        guard._authority = generate_key()  # type: ignore[attr-defined]
        bundle = {"keys": [{**public_jwk(guard._authority), "kid": "k1", "use": "jwt-svid"}]}  # type: ignore[attr-defined]
        guard.store.credentials.put_trust_bundle("acme", "prod.example", json.dumps(bundle), 0)
        guard._grants = {ws: grant(guard, ws=ws) for ws in ("acme", "beta")}  # type: ignore[attr-defined]
    grants: dict[str, str] = guard._grants  # type: ignore[attr-defined]
    authority: ECKey = guard._authority  # type: ignore[attr-defined]
    key = authority if signer == "trusted authority" else generate_key()
    if (subject, domain, signer) == ("acme", "prod.example", "trusted authority"):
        key = generate_key()  # that one would prove itself: sign it with the wrong key
    svid = _svid(key, f"spiffe://{domain}/ns/ci/sa/planner", "tether", clock.now + 60)
    if subject == "unreadable":
        svid = svid[:-10]
    request = ExchangeRequest(
        subject_token=grants.get(subject, subject),
        subject_token_type=GRANT_TOKEN_TYPE,
        actor_token=svid,
        actor_token_type=JWT_SVID_TOKEN_TYPE,
    )
    with pytest.raises(CredentialRefused) as refusal:
        guard.credentials.exchange(request, dpop_jkt=generate_key().thumbprint())
    assert (str(refusal.value), refusal.value.error) == (UNPROVEN_SVID, "invalid_client")


# -- downstream tokens ------------------------------------------------------------------------------------


def test_a_downstream_token_is_for_one_api_one_tool_and_a_minute(
    guard: Guard, clock: Clock
) -> None:
    grant(guard)
    verifier = TokenVerifier(
        jwks=guard.credentials.jwks, issuer="tether", audience="https://bank.example", clock=clock
    )
    with guard.task(
        workspace="acme", agent="planner", user="alice", request="", tools=["pay", "read_file"]
    ) as t:
        allowed = t.authorize("pay", {})
        token = t.downstream_token(allowed, "https://bank.example")
        claims = verifier.verify(token)
        assert claims["scope"] == "pay" and claims["sub"] == "alice"
        assert claims["exp"] - claims["iat"] <= 60 and claims["aud"] == "https://bank.example"
        assert claims["act"]["sub"].endswith("/agent/planner")
        with pytest.raises(CredentialRefused, match="never accepted downstream"):
            TokenVerifier(
                jwks=guard.credentials.jwks(), issuer="tether", audience="tether:pdp", clock=clock
            ).verify(t.token)
        with pytest.raises(CredentialRefused, match="not this API"):
            TokenVerifier(
                jwks=guard.credentials.jwks(),
                issuer="tether",
                audience="https://other",
                clock=clock,
            ).verify(token)
        with pytest.raises(CredentialRefused):
            verifier.verify(_flip(token, len(token) // 2, 1))
        with pytest.raises(InvalidInput, match="not an allowed call"):
            t.downstream_token(t.authorize("write_file", {}), "https://bank.example")

        def downstream(proof: str | None, **kw: Any) -> Any:
            spec = {"audience": "https://bank.example", "decision_id": allowed.decision_id}
            return guard.credentials.downstream(t.token, proof=proof, **{**spec, **kw})

        holder = proof_for(guard, t.token)  # a proof for calls, not for the token endpoint
        with refused("no DPoP proof was presented"):
            downstream(None)
        with refused("another key than the token is bound to"):  # a thief with the token only
            downstream(
                make_proof(
                    generate_key(),
                    htm="POST",
                    htu="tether:token",
                    now=clock.now,
                    access_token=t.token,
                )
            )
        with refused("is for https://tether.test/v1/authorize, not tether:token"):
            downstream(holder)
        denied = t.authorize("write_file", {"path": "x"})  # not allowed: not in the task
        with refused(f"{denied.decision_id} is not a recent allowed call"):
            downstream(proof_for_endpoint(guard, t.token), decision_id=denied.decision_id)
        with refused("is not a recent allowed call"):
            downstream(proof_for_endpoint(guard, t.token), decision_id="dec_forged")
        with refused("cannot be for Tether"):
            downstream(proof_for_endpoint(guard, t.token), audience="tether:pdp")
        clock.now += 61
        with refused("is not a recent allowed call"):  # the decision is a minute old
            downstream(proof_for_endpoint(guard, t.token))
        clock.now += LEEWAY  # the token's minute, and the verifier's leeway for clocks
        with pytest.raises(CredentialRefused, match="expired"):
            verifier.verify(token)
        guard.revoke_task(t.id)


# -- the decision pipeline --------------------------------------------------------------------------------


def test_the_pipeline_authenticates_every_call(guard: Guard) -> None:
    grant(guard)
    with guard.task(
        workspace="acme", agent="planner", user="alice", request="", tools=["read_file"]
    ) as t:
        token = t.token
        assert guard.authorize(None, "read_file", {}, token=token).allowed
        forged = _flip(token, len(token) - 5, 2)
        d = guard.authorize(None, "read_file", {}, token=forged)
        assert d.effect is Effect.DENY and d.reasons[0].stage is Stage.AUTHENTICATE
        assert "credential refused" in d.reason
        d = guard.authorize("task_other", "read_file", {}, token=token)
        assert "the token is for task" in d.reason
        d = guard.authorize(None, "read_file", {}, token=token, proof="not-a-proof")
        assert "DPoP proof is malformed" in d.reason
        good = make_proof(
            guard.agent_keys.get("acme", "planner"),
            htm="POST",
            htu="tether:embedded",
            now=guard._clock(),
            access_token=token,
        )
        assert guard.authorize(None, "read_file", {}, token=token, proof=good).allowed
        assert (
            "already used" in guard.authorize(None, "read_file", {}, token=token, proof=good).reason
        )


def test_a_sub_task_ends_with_the_task_that_delegated_it(guard: Guard) -> None:
    grant(guard)
    with guard.task(
        workspace="acme", agent="planner", user="alice", request="", tools=["read_file"]
    ) as t:
        sub = t.delegate("coder")
        assert sub.authorize("read_file", {}).allowed
    d = sub.authorize("read_file", {})
    assert d.effect is Effect.DENY and f"task {t.id} was ended" in d.reason
    stored = guard.store.task(sub.id)
    assert stored is not None and stored.status.value == "ended"


def test_exchanges_never_cross_workspaces(guard: Guard) -> None:
    beta_token, _ = exchange(guard, grant(guard, ws="beta"), "planner", ws="beta")
    with refused("the actor belongs to workspace acme, the grant to beta"):
        exchange(guard, beta_token, "coder", ws="acme")
    with refused("the actor belongs to workspace acme, the grant to beta"):
        exchange(guard, grant(guard, ws="beta"), "planner", ws="acme")


def test_a_task_names_its_grant_and_the_grant_its_user(guard: Guard) -> None:
    guard.add_user("acme", "bob")
    bobs = grant(guard, user="bob", tools=("read_file",))
    spec = {"workspace": "acme", "agent": "planner", "request": "", "tools": ["read_file"]}
    with guard.task(user="bob", grant=bobs, **spec) as t:  # type: ignore[arg-type]
        assert t.claims.grant == bobs and t.claims.sub == "bob"
    with pytest.raises(InvalidInput, match="was not made by user 'alice'"):
        guard.task(user="alice", grant=bobs, **spec)  # type: ignore[arg-type]
    with refused("user 'alice' has not delegated \\['read_file'\\]"):
        guard.task(user="alice", **spec)  # type: ignore[arg-type]


def test_the_downstream_verifier_follows_a_key_rotation(guard: Guard, clock: Clock) -> None:
    exchange(guard, grant(guard), "planner")  # the first signing key, which the verifier loads
    verifier = TokenVerifier(
        jwks=guard.credentials.jwks, issuer="tether", audience="https://bank.example", clock=clock
    )
    clock.now += 1
    guard.credentials.keyring.rotate(clock.now, lead=0)
    with guard.task(
        workspace="acme", agent="planner", user="alice", request="", tools=["pay"]
    ) as t:
        token = t.downstream_token(t.authorize("pay", {}), "https://bank.example")
        with pytest.raises(CredentialRefused, match="unknown signing key"):
            verifier.verify(token)  # fetched moments ago: not refetched for every unknown kid
        clock.now += 10
        assert verifier.verify(token)["scope"] == "pay"


def test_policies_see_how_a_call_was_delegated(guard: Guard) -> None:
    guard.activate_policies(
        "acme",
        {
            **PERMIT_ALL,
            "chain.cedar": """
@id("direct-payments-only")
@reason("only an agent alice delegated to directly may pay")
forbid (principal, action == Action::"pay", resource)
when { context.delegation.depth > 1 };

@id("no-writes-for-the-planners-helpers")
forbid (principal, action == Action::"write_file", resource)
when { context.delegation.delegators.contains("planner") && context.delegation.grant != "" };
""",
        },
    )
    grant(guard)
    spec = {"workspace": "acme", "agent": "planner", "user": "alice", "request": ""}
    with guard.task(tools=["pay", "write_file"], **spec) as planner:  # type: ignore[arg-type]
        assert planner.authorize("pay", {}).allowed
        assert planner.authorize("write_file", {}).allowed
        with planner.delegate("coder") as coder:
            paid = coder.authorize("pay", {})
            assert (
                paid.effect is Effect.DENY
                and paid.reason == "only an agent alice delegated to directly may pay"
            )
            wrote = coder.authorize("write_file", {})
            assert (
                wrote.effect is Effect.DENY
                and wrote.reasons[0].policy == "no-writes-for-the-planners-helpers"
            )
    record = guard.store.decisions(limit=1)[0]
    assert json.loads(record.context or "{}")["delegation"]["delegators"] == ["planner"]


# -- regressions from the security review ---------------------------------------------------------


def test_only_the_holder_of_a_task_token_can_delegate_it(guard: Guard) -> None:
    parent, p = exchange(guard, grant(guard), "planner")
    thief = generate_key()
    stolen = make_proof(
        thief, htm="POST", htu="tether:token", now=guard._clock(), access_token=parent
    )
    with refused("no DPoP proof was presented"):
        exchange(guard, parent, "tester", subject_proof=None)
    with refused("another key than the token is bound to"):
        exchange(guard, parent, "tester", subject_proof=stolen)
    # The new token is bound to the actor's own key, whoever sends the request.
    _, c = exchange(guard, parent, "tester")
    assert c.jkt == guard.agent_keys.get("acme", "tester").thumbprint() != p.jkt
    with refused("must be signed with the actor's key"):
        exchange(guard, parent, "coder", dpop_jkt=p.jkt)


def test_a_thiefs_unproven_calls_are_not_counted_against_the_task(guard: Guard) -> None:
    guard.activate_policies(
        "acme",
        {
            **PERMIT_ALL,
            "budget.cedar": "forbid (principal, action, resource) when { context.task.calls >= 3 };",
        },
    )
    grant(guard)
    remote = PDP(
        guard.store,
        guard._views,
        guard._tasks,
        credentials=guard.credentials,
        approvals=guard.approvals,
        log=guard.audit,
        proofs=ProofRule(htu=HTU, required=True),
    )
    with guard.task(
        workspace="acme", agent="planner", user="alice", request="", tools=["read_file"]
    ) as t:

        def call(proof: str | None) -> Any:
            return remote.decide(
                AuthorizeRequest(tool="read_file", args={}, token=t.token, proof=proof)
            )

        assert call(proof_for(guard, t.token)).allowed
        for _ in range(5):  # a thief holding the token but not the key
            assert call(None).effect is Effect.DENY
        assert call(proof_for(guard, t.token)).allowed  # the budget saw two calls, not seven
    unproven = [d for d in guard.store.decisions(limit=20) if "no DPoP proof" in d.reasons]
    assert len(unproven) == 5 and all(d.task_id is None for d in unproven)


def test_revoking_an_agent_key_refuses_the_tokens_bound_to_it(guard: Guard, clock: Clock) -> None:
    token, claims = exchange(guard, grant(guard), "planner")
    guard.credentials.revoke_agent_key("acme", "planner", claims.jkt or "")
    with refused("the agent key it is bound to"):
        authenticate(guard, token, proof_for(guard, token))
    # A retiring key's tokens end when it does.
    old = guard.agent_keys.get("acme", "coder")
    rotate_key(
        guard.store,
        workspace="acme",
        agent="coder",
        jwk=public_jwk(generate_key()),
        now=clock.now,
        overlap=100,
    )
    parent, _ = exchange(guard, grant(guard, agent="coder", may_act=()), "coder", key=old)
    assert _claims_of(parent)["exp"] <= clock.now + 100


def test_revocations_allow_for_the_clock_skew_between_processes(
    guard: Guard, home: Path, clock: Clock
) -> None:
    fast = Clock(clock.now + 20)  # another replica, its clock 20 s ahead
    other = Guard(Store.at_home(home), clock=fast)
    try:
        g = grant(guard)
        token, _ = exchange(other, g, "planner")
        clock.now += 5
        guard.credentials.revoke_workspace("acme")
        with refused("every credential of workspace acme"):
            guard.credentials.authenticate(token)
    finally:
        other.close()


def test_overlapping_rotations_never_sign_with_a_superseded_key(guard: Guard, clock: Clock) -> None:
    keyring = guard.credentials.keyring
    first = keyring.signing_key(clock.now)
    pending = keyring.rotate(clock.now, lead=300)
    urgent = keyring.rotate(clock.now, lead=0)  # a second rotation before the first took effect
    for later in (0, 310, 3000):
        assert keyring.signing_key(clock.now + later).kid == urgent.kid
    kids = {k["kid"] for k in guard.credentials.jwks()["keys"]}
    assert pending.kid not in kids and {first.kid, urgent.kid} <= kids


def test_odd_input_is_refused_not_raised(guard: Guard) -> None:
    with pytest.raises(InvalidInput, match="not a valid EC P-256 public key"):
        register_key(
            guard.store,
            workspace="acme",
            agent="coder",
            jwk={"kty": "EC", "crv": "P-256", "x": 123, "y": "AA"},
            now=0,
        )
    with refused("not a compact JWS"):
        guard.credentials.authenticate("eyJ\udcff")
    verifier = TokenVerifier(jwks={"keys": []}, issuer="tether", audience="https://a")
    header = (
        base64.urlsafe_b64encode(b'{"alg":"ES256","typ":"at+jwt","kid":[]}').decode().rstrip("=")
    )
    with pytest.raises(CredentialRefused, match="names no signing key"):
        verifier.verify(f"{header}.e30.AAAA")
    with pytest.raises(CredentialRefused, match="not ASCII"):
        verifier.verify("eyJ\udcff")


def test_revocations_are_forgotten_once_nothing_they_refuse_is_alive(
    guard: Guard, clock: Clock
) -> None:
    _, claims = exchange(guard, grant(guard), "planner")
    guard.credentials.revoke_token(claims.jti)
    revocations = guard.credentials.revocations
    assert claims.jti in revocations._entries["token"]
    clock.now += 3600  # the token expired long ago
    revocations.refresh()
    assert claims.jti not in revocations._entries["token"]


def test_the_workspace_file_keeps_its_grants_in_step(guard: Guard, tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    folder.mkdir()

    def apply(tools: list[str]) -> list[Any]:
        (folder / "workspace.yaml").write_text(
            "name: acme\nusers: [{name: alice}]\n"
            f"grants: [{{user: alice, agent: coder, tools: {tools}}}]\n"
        )
        guard.apply_directory(folder)
        return [g for g in guard.store.credentials.grants("acme") if g.source == "file"]

    first = apply(["read_file", "pay"])
    assert len(first) == 1 and apply(["read_file", "pay"]) == first  # applying again: no change
    narrowed = apply(["read_file"])
    wide, narrow = sorted(narrowed, key=lambda g: len(g.tools), reverse=True)
    assert wide.revoked_at is not None and narrow.revoked_at is None
    guard.revoke_grant(narrow.id)  # alice changes her mind
    again = apply(["read_file"])
    assert len(again) == 2 and all(g.revoked_at is not None for g in again)


def test_a_downstream_token_needs_an_allowed_call_of_the_same_task(guard: Guard) -> None:
    grant(guard)
    spec = {"workspace": "acme", "agent": "planner", "user": "alice", "request": ""}
    with (
        guard.task(tools=["pay"], **spec) as mine,  # type: ignore[arg-type]
        guard.task(tools=["pay"], **spec) as other,  # type: ignore[arg-type]
    ):
        theirs = other.authorize("pay", {})
        assert theirs.allowed
        with refused(f"{theirs.decision_id} is not a recent allowed call of task {mine.id}"):
            guard.credentials.downstream(
                mine.token,
                proof=proof_for_endpoint(guard, mine.token),
                audience="https://bank.example",
                decision_id=theirs.decision_id,
            )


def test_a_point_off_the_curve_is_refused_every_time_it_is_sent() -> None:
    """Imported keys are remembered; refusals are not, so a bad key never slips through."""
    zero = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
    for _ in range(2):
        with pytest.raises(InvalidInput, match="not a valid EC P-256 public key"):
            parse_public_jwk({"kty": "EC", "crv": "P-256", "x": zero, "y": zero})
    good = generate_key().as_dict(private=False)
    assert parse_public_jwk(good) is parse_public_jwk(dict(good))  # imported once


# -- agent keys: one key, one agent, one thumbprint ----------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_key_revocation_reaches_only_its_workspace_and_agent(guard: Guard, clock: Clock) -> None:
    """A public key is public (every DPoP proof carries it): revoking it as another workspace's
    key must not touch the agent that really holds it."""
    g = grant(guard)
    token, claims = exchange(guard, g, "planner")
    planner = guard.store.credentials.agent_keys("acme", "planner")[0]
    # A store from before keys were unique: beta's rogue holds acme/planner's public key too.
    guard.store.credentials.add_agent_key(
        msgspec.structs.replace(planner, workspace="beta", agent="rogue"), lambda _: None
    )
    guard.credentials.revoke_agent_key("beta", "rogue", planner.kid)
    assert authenticate(guard, token, proof_for(guard, token)).jti == claims.jti
    clock.now += 1
    exchange(guard, g, "planner")  # and it still gets new ones
    guard.credentials.revoke_agent_key("acme", "planner", planner.kid)
    with refused(f"the agent key it is bound to \\({planner.kid}\\) was revoked"):
        authenticate(guard, token, proof_for(guard, token))


def test_a_key_is_registered_to_one_agent_only(guard: Guard, clock: Clock) -> None:
    held = public_jwk(guard.agent_keys.get("acme", "planner"))
    with pytest.raises(Conflict, match="already registered to another agent: a key proves one"):
        register_key(guard.store, workspace="beta", agent="rogue", jwk=held, now=clock.now)
    with pytest.raises(Conflict, match="already registered to agent 'planner'"):
        register_key(guard.store, workspace="acme", agent="coder", jwk=held, now=clock.now)
    with pytest.raises(Conflict, match="'planner' already has key"):
        register_key(guard.store, workspace="acme", agent="planner", jwk=held, now=clock.now)
    guard.credentials.revoke_agent_key("acme", "planner", parse_public_jwk(held).thumbprint())
    with pytest.raises(Conflict, match="another agent"):  # a revoked key stays its agent's
        register_key(guard.store, workspace="beta", agent="rogue", jwk=held, now=clock.now)


def test_a_stopped_keys_revocation_outlives_every_token_bound_to_it() -> None:
    """A key's revocation is kept while a token bound to it could still be taken: its longest
    life, with the largest clock skew a deployment may allow on either side."""
    assert CLOCKS_DIFFER >= MAX_SKEW and TOKENS_OUTLIVE_A_KEY >= MAX_TOKEN_TTL + 2 * MAX_SKEW
    Settings(skew=MAX_SKEW, token_ttl=MAX_TOKEN_TTL)
    with pytest.raises(InvalidInput, match="skew must be between 0 and 300 seconds"):
        Settings(skew=MAX_SKEW + 1)


def _at_once(register: Any, each: list[Any]) -> None:
    """`register(x)` for every x of `each`, each on its thread, all let go together."""
    start = threading.Barrier(len(each))

    def run(x: Any) -> None:
        start.wait()
        register(x)

    threads = [threading.Thread(target=run, args=(x,)) for x in each]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_one_key_registered_to_several_agents_at_once_goes_to_one(
    guard: Guard, clock: Clock
) -> None:
    """Each registration checks that no agent has the key, then adds it: made at once, each
    would pass the check before the others wrote, and one key would prove several agents."""
    agents = [f"agent{i}" for i in range(6)]
    for _ in range(5):
        jwk = public_jwk(generate_key())
        outcomes: dict[str, str] = {}

        def register(
            agent: str, jwk: dict[str, Any] = jwk, outcomes: dict[str, str] = outcomes
        ) -> None:
            try:
                register_key(guard.store, workspace="acme", agent=agent, jwk=jwk, now=clock.now)
                outcomes[agent] = "registered"
            except Conflict as exc:
                outcomes[agent] = str(exc)

        _at_once(register, agents)
        winners = [agent for agent, outcome in outcomes.items() if outcome == "registered"]
        assert len(outcomes) == len(agents) and len(winners) == 1, outcomes
        kid = parse_public_jwk(jwk).thumbprint()
        holders = [
            a
            for a in agents
            if kid in {k.kid for k in guard.store.credentials.agent_keys("acme", a)}
        ]
        assert holders == winners


def test_an_agent_given_keys_at_once_gets_no_more_than_it_may_hold(
    guard: Guard, clock: Clock
) -> None:
    def register(jwk: dict[str, Any]) -> None:
        with contextlib.suppress(Conflict):
            register_key(guard.store, workspace="acme", agent="coder", jwk=jwk, now=clock.now)

    _at_once(register, [public_jwk(generate_key()) for _ in range(MAX_KEYS + 4)])
    assert len(guard.store.credentials.agent_keys("acme", "coder")) == MAX_KEYS


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    holder=st.tuples(st.sampled_from(["acme", "beta"]), st.sampled_from(["planner", "coder"])),
    revoker=st.tuples(st.sampled_from(["acme", "beta"]), st.sampled_from(["planner", "coder"])),
    same_key=st.booleans(),
    effective_in=st.integers(-600, 600),
)
def test_a_key_revocation_refuses_exactly_its_agents_tokens_from_its_time(
    guard: Guard,
    clock: Clock,
    holder: tuple[str, str],
    revoker: tuple[str, str],
    same_key: bool,
    effective_in: int,
) -> None:
    """Whatever the workspaces, agents and times: a key revocation refuses a token if and only
    if it names the token's workspace, agent and key, and its time has come."""
    kid, other = _b64(os.urandom(32)), _b64(os.urandom(32))  # fresh keys: examples share a store
    claims = AccessClaims(
        **{
            **_claims_of(exchange(guard, grant(guard), "planner")[0]),
            "ws": holder[0],
            "agent": holder[1],
            "cnf": {"jkt": kid},
        }
    )
    guard.store.credentials.add_revocation(
        "key",
        revoker[0],
        key_subject(revoker[1], kid if same_key else other),
        at=clock.now + effective_in,
        expires_at=clock.now + 7200,
        reason="revoked",
    )
    revocations = guard.credentials.revocations
    revocations.refresh()
    why = revocations.check(claims, clock.now)
    assert (why is not None) == (holder == revoker and same_key and effective_in <= 0), why


def test_a_key_revoked_by_a_process_whose_clock_runs_ahead_stops_at_once_everywhere(
    guard: Guard, home: Path, clock: Clock
) -> None:
    """A key's stop applies by the checking process's clock: stamped with the revoker's own
    time, a process 20 s behind it (within the skew) took the key's tokens for 20 s more."""
    token, claims = exchange(guard, grant(guard), "planner")
    ahead = Guard(Store.at_home(home), clock=Clock(clock.now + 20))  # `tether agent keys --revoke`
    try:
        assert claims.jkt is not None
        ahead.credentials.revoke_agent_key("acme", "planner", claims.jkt)
    finally:
        ahead.close()
    guard.credentials.revocations.refresh()  # (what its next poll does)
    clock.now += 1
    with refused(f"the agent key it is bound to \\({claims.jkt}\\) was revoked"):
        authenticate(guard, token, proof_for(guard, token))


def test_revoking_a_key_ends_the_tasks_delegated_with_it(guard: Guard, clock: Clock) -> None:
    """As revoking a token ends those delegated from it: whoever held the key may have
    delegated, and what it delegated must not outlive the key."""
    parent, claims = exchange(guard, grant(guard), "planner")
    child, _ = exchange(guard, parent, "coder")
    grandchild, _ = exchange(guard, child, "tester")
    assert claims.jkt is not None
    guard.credentials.revoke_agent_key("acme", "planner", claims.jkt)
    for token, agent in ((child, "coder"), (grandchild, "tester")):
        with refused(
            f"the key \\({claims.jkt}\\) of agent planner, which delegated it, was revoked"
        ):
            authenticate(guard, token, proof_for(guard, token, agent))
    fresh, _ = exchange(guard, grant(guard, agent="coder"), "coder")  # coder's key stands
    assert authenticate(guard, fresh, proof_for(guard, fresh, "coder"))


def test_a_retired_keys_tokens_end_when_it_retires(
    guard: Guard, home: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tokens issued before a rotation end with the key they are bound to, in every
    process, without a call reading the agent's keys."""
    g = grant(guard)
    token, claims = exchange(guard, g, "planner")  # five minutes, bound to the key to retire
    new = generate_key()
    rotate_key(
        guard.store,
        workspace="acme",
        agent="planner",
        jwk=public_jwk(new),
        now=clock.now,
        overlap=10,
    )
    other = Guard(Store.at_home(home), clock=clock)  # another process on the same store
    try:

        def no_reads(*_: Any) -> Any:
            raise AssertionError("the hot path read the agent's keys")

        monkeypatch.setattr(guard.store.credentials, "agent_keys", no_reads)
        clock.now += 9  # the overlap: still good
        assert authenticate(guard, token, proof_for(guard, token)).jti == claims.jti
        assert other.credentials.authenticate(token).jti == claims.jti
        clock.now += 1  # retired
        for process in (guard, other):
            with refused(f"the agent key it is bound to \\({claims.jkt}\\) was retired"):
                process.credentials.authenticate(token)
        monkeypatch.undo()
        fresh, renewed = exchange(guard, g, "planner", key=new)
        assert renewed.jkt == thumbprint(new) and guard.credentials.authenticate(fresh)
    finally:
        other.close()


@settings(max_examples=200, deadline=None)
@given(
    scalar=st.integers(1, P256_ORDER - 1),
    member=st.sampled_from(["x", "y"]),
    variant=st.sampled_from(["leading zero", "padding", "unused bits", "standard alphabet"]),
    data=st.data(),
)
def test_a_key_has_one_text_and_one_thumbprint(
    scalar: int, member: str, variant: str, data: st.DataObject
) -> None:
    """RFC 7518 section 6.2.1.2: a coordinate is exactly 32 bytes, in one canonical text; any
    other text of the same key is refused, so it can never be named by a second kid."""
    key = ECKey.import_key(ec.derive_private_key(scalar, ec.SECP256R1()).public_key())
    jwk = public_jwk(key)
    assert thumbprint(parse_public_jwk(jwk)) == key.thumbprint() == parsed_thumbprint(jwk)
    text = jwk[member]
    raw = base64.urlsafe_b64decode(text + "=")
    if variant == "leading zero":
        other = _b64(b"\0" * data.draw(st.integers(1, 3)) + raw)
    elif variant == "padding":
        other = text + "="
    elif variant == "unused bits":
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(text[-1]) | data.draw(st.integers(1, 3))
        other = text[:-1] + alphabet[last]
    else:
        assume("-" in text or "_" in text)
        other = text.replace("-", "+").replace("_", "/")
    assert base64.urlsafe_b64decode(other.replace("+", "-").replace("/", "_") + "===")[-32:] == raw
    with pytest.raises(InvalidInput, match="exactly 32 bytes in unpadded base64url"):
        parse_public_jwk({**jwk, member: other})


def test_a_short_coordinate_is_refused() -> None:
    """A coordinate whose first byte is zero is still sent as 32 bytes, never 31."""
    key = next(k for k in iter(generate_key, None) if public_jwk(k)["x"].startswith("AA"))
    jwk = public_jwk(key)
    raw = base64.urlsafe_b64decode(jwk["x"] + "=")
    assert raw[0] == 0 and parse_public_jwk(jwk)
    with pytest.raises(InvalidInput, match="exactly 32 bytes"):
        parse_public_jwk({**jwk, "x": _b64(raw[1:])})


# -- the downstream verifier: current keys only, each token once ---------------------------------------


def _bank_verifier(key: ECKey, clock: Clock) -> TokenVerifier:
    """The downstream API's verifier, trusting `key` as Tether's (kid k1)."""
    return TokenVerifier(
        jwks={"keys": [{**public_jwk(key), "kid": "k1"}]},
        issuer="tether",
        audience="https://bank.example",
        clock=clock,
    )


def _downstream_for(key: ECKey, kid: str, now: float, jti: str) -> str:
    """A downstream token as Tether signs one (with `key`, naming `kid`)."""
    claims = {
        "iss": "tether",
        "sub": "alice",
        "aud": "https://bank.example",
        "iat": int(now),
        "exp": int(now) + 60,
        "jti": jti,
        "scope": "pay",
        "use": "downstream",
        "act": {"sub": "spiffe://tether.local/ws/acme/agent/planner"},
    }
    return sign_jws({"typ": "at+jwt", "kid": kid}, json.dumps(claims).encode(), key)


def test_a_downstream_token_is_taken_for_its_minute_and_a_few_seconds_of_clock_more(
    clock: Clock,
) -> None:
    """A downstream token cannot be revoked once minted (the API checks it alone): what bounds
    it is its life, so the verifier's leeway for clocks is seconds, not half of that life."""
    key = generate_key()
    verifier = _bank_verifier(key, clock)
    issued = clock.now
    clock.now = issued + 60 + LEEWAY - 0.5
    verifier.verify(_downstream_for(key, "k1", issued, "tok_in_time"))
    clock.now = issued + 60 + LEEWAY
    with pytest.raises(CredentialRefused, match="expired"):
        verifier.verify(_downstream_for(key, "k1", issued, "tok_late"))
    assert LEEWAY <= 5


def test_the_downstream_verifier_drops_a_retired_signing_key(guard: Guard, clock: Clock) -> None:
    """A leaked signing key, rotated away: once Tether stops publishing it, a verifier that
    has run all along stops trusting it within the JWKS max age."""
    keyring = guard.credentials.keyring
    leaked = keyring.signing_key(clock.now)
    verifier = TokenVerifier(
        jwks=guard.credentials.jwks, issuer="tether", audience="https://bank.example", clock=clock
    )
    assert verifier.verify(_downstream_for(leaked.key, leaked.kid, clock.now, "tok_1"))
    keyring.rotate(clock.now, lead=0)
    retire_at = next(k.retire_at for k in keyring.all_keys() if k.kid == leaked.kid)
    assert retire_at is not None
    clock.now = retire_at  # retired: no longer published
    assert leaked.kid not in {k["kid"] for k in guard.credentials.jwks()["keys"]}
    with pytest.raises(CredentialRefused, match="unknown signing key"):
        verifier.verify(_downstream_for(leaked.key, leaked.kid, clock.now, "tok_2"))
    assert JWKS_MAX_AGE == verifier_module.MAX_AGE  # what Tether tells verifiers to cache


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 400), st.booleans()), max_size=40))
def test_the_verifier_never_trusts_a_jwks_older_than_its_max_age(
    steps: list[tuple[int, bool]],
) -> None:
    """Whenever tokens come, and whatever kids they name: each is checked against a JWKS
    fetched at most MAX_AGE ago, and the JWKS is never fetched more often than every
    REFETCH_AFTER seconds, however many unknown kids are sent."""
    key, clock, fetched = generate_key(), Clock(), []

    def jwks() -> dict[str, Any]:
        fetched.append(clock.now)
        return {"keys": [{**public_jwk(key), "kid": "k1"}]}

    verifier = TokenVerifier(
        jwks=jwks, issuer="tether", audience="https://bank.example", clock=clock
    )
    for n, (advance, known) in enumerate(steps):
        clock.now += advance
        token = _downstream_for(key, "k1" if known else "k2", clock.now, f"tok_{n}")
        if known:
            assert verifier.verify(token)["jti"] == f"tok_{n}"
        else:
            with pytest.raises(CredentialRefused, match="unknown signing key"):
                verifier.verify(token)
        assert clock.now - fetched[-1] < verifier_module.MAX_AGE
    assert all(b - a >= verifier_module.REFETCH_AFTER for a, b in itertools.pairwise(fetched))


def test_a_downstream_token_is_accepted_once(guard: Guard, clock: Clock) -> None:
    """One allowed decision, one downstream token, one downstream call: the same token again,
    or its other ECDSA signature, is a replay."""
    grant(guard)
    verifier = TokenVerifier(
        jwks=guard.credentials.jwks, issuer="tether", audience="https://bank.example", clock=clock
    )
    with guard.task(
        workspace="acme", agent="planner", user="alice", request="", tools=["pay"]
    ) as t:
        token = t.downstream_token(t.authorize("pay", {}), "https://bank.example")
        claims = verifier.verify(token)
        for again in (token, _other_signature(token)):
            with pytest.raises(CredentialRefused, match=f"{claims['jti']} was already used"):
                verifier.verify(again)
        second = t.downstream_token(t.authorize("pay", {}), "https://bank.example")
        assert verifier.verify(second)["decision"] != claims["decision"]


@settings(max_examples=100, deadline=None)
@given(order=st.lists(st.integers(0, 4), max_size=30))
def test_each_downstream_token_is_accepted_at_its_first_use_only(order: list[int]) -> None:
    key, clock = generate_key(), Clock()
    verifier = TokenVerifier(
        jwks={"keys": [{**public_jwk(key), "kid": "k1"}]},
        issuer="tether",
        audience="https://bank.example",
        clock=clock,
    )
    tokens = [_downstream_for(key, "k1", clock.now, f"tok_{n}") for n in range(5)]
    seen: set[int] = set()
    for n in order:
        clock.now += 1
        if n in seen:
            with pytest.raises(CredentialRefused, match="already used"):
                verifier.verify(tokens[n])
        else:
            assert verifier.verify(tokens[n])["jti"] == f"tok_{n}"
        seen.add(n)


def test_the_verifiers_replay_cache_is_bounded_and_fails_closed(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full of live tokens, it refuses another rather than forget one; an expired token's id
    is forgotten, so it holds no more than the live tokens."""
    monkeypatch.setattr(verifier_module, "REMEMBERED", 2)
    key = generate_key()
    verifier = _bank_verifier(key, clock)
    for jti in ("tok_1", "tok_2"):
        verifier.verify(_downstream_for(key, "k1", clock.now, jti))
    with pytest.raises(CredentialRefused, match="2 tokens are live and remembered already"):
        verifier.verify(_downstream_for(key, "k1", clock.now, "tok_3"))
    clock.now += 60 + LEEWAY  # the first two expired, leeway included
    verifier.verify(_downstream_for(key, "k1", clock.now, "tok_3"))
    verifier.verify(_downstream_for(key, "k1", clock.now, "tok_4"))


def test_a_proof_read_twice_is_checked_in_full_both_times(guard: Guard, clock: Clock) -> None:
    """The HTTP service reads a request's proof twice (its rate bucket, then its call): only
    its signature is remembered, never its request, its time or its one use."""
    token, claims = exchange(guard, grant(guard), "planner")
    proof = proof_for(guard, token)
    seen: set[str] = set()

    def once(key: str, _until: float) -> bool:
        fresh = key not in seen
        seen.add(key)
        return fresh

    def check(**kw: Any) -> str:
        spec = {"htm": "POST", "htu": HTU, "now": clock.now, "access_token": token}
        return check_proof(proof, **{"remember_once": lambda *_: True, **spec, **kw})

    assert check() == check() == claims.jkt  # checked, not claimed: as the rate limit does
    with refused("the DPoP proof is for"):
        check(htu="https://tether.test/v1/other")
    with refused("the DPoP proof is for POST, not GET"):
        check(htm="GET")
    with refused("not bound to this token"):
        check(access_token=exchange(guard, grant(guard), "planner")[0])
    assert check(remember_once=once) == claims.jkt
    with refused("already used"):
        check(remember_once=once)
    with refused("must be fresh"):
        check(now=clock.now + 61)


# -- the service's signing keys: a superseded rotation --------------------------------------------------


class _SigningKeyTable:
    """The store's signing keys, in memory: what a Keyring reads and writes."""

    def __init__(self) -> None:
        self.rows: dict[str, SigningKeyRecord] = {}

    def signing_keys(self) -> list[SigningKeyRecord]:
        return sorted(self.rows.values(), key=lambda r: r.activate_at)

    def add_signing_key(self, key: SigningKeyRecord, *, retire: dict[str, float]) -> None:
        self.rows[key.kid] = key
        for kid, at in retire.items():
            self.rows[kid] = msgspec.structs.replace(self.rows[kid], retire_at=at)


@settings(max_examples=300, deadline=None)
@example(steps=[(0, 0), (0, 300), (1, None)])  # two keys activated at one instant
@example(steps=[(0, 300), (10, 86400), (3900, None)])  # a rotation superseding a pending one
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 5000), st.none() | st.integers(0, 86400)), min_size=1, max_size=8
    )
)
def test_a_signing_key_outlives_every_token_it_signs(steps: list[tuple[int, int | None]]) -> None:
    """Whatever rotations come, with whatever leads, superseding each other or not: the key
    that signs at any moment verifies for the longest token life after it, and there always is
    one that was published beforehand (none is made on the spot for want of a signer)."""
    clock = Clock()
    store = SimpleNamespace(credentials=_SigningKeyTable())
    ring = Keyring(store, bytes(32), max_token_ttl=3600, skew=30, clock=clock)  # type: ignore[arg-type]
    made = [ring.signing_key(clock.now)]
    for advance, lead in steps:
        clock.now += advance
        if lead is not None:
            made.append(ring.rotate(clock.now, lead=lead))
        key = ring.signing_key(clock.now)
        assert key.retire_at is None or key.retire_at >= clock.now + 3600 + 30
    assert len(ring.all_keys()) == len(made)


def test_a_withdrawn_rotation_leaves_the_signer_signing(guard: Guard, clock: Clock) -> None:
    keyring = guard.credentials.keyring
    current = keyring.signing_key(clock.now)
    keyring.rotate(clock.now, lead=300)
    clock.now += 10
    later = keyring.rotate(clock.now, lead=86400)  # supersedes the pending one
    clock.now += 3900  # past where the withdrawn key would have retired the current one
    token, _ = exchange(guard, grant(guard), "planner")
    assert jws.extract_compact(token.encode()).headers()["kid"] == current.kid
    clock.now += 250
    assert authenticate(guard, token, proof_for(guard, token))
    assert {k.kid for k in keyring.all_keys()} >= {current.kid, later.kid}
    assert len(keyring.all_keys()) == 3  # no key made at once, never published in advance


def _keyrings(*offsets: float) -> tuple[Clock, list[Keyring], _SigningKeyTable]:
    """Keyrings of processes sharing one store, each clock `offset` seconds off the first."""
    clock, table = Clock(), _SigningKeyTable()
    store = SimpleNamespace(credentials=table)
    rings = [
        Keyring(store, bytes(32), max_token_ttl=3600, skew=30, clock=lambda o=o: clock.now + o)  # type: ignore[arg-type]
        for o in offsets
    ]
    return clock, rings, table


def test_a_caller_whose_clock_reads_earlier_signs_with_the_key_made_meanwhile() -> None:
    """The first key is made on first use, at the maker's `now`. A thread that read the clock a
    moment before (the audit checkpointer, another task's exchange), or a process whose clock
    is behind, asks at a time before that key's activation: it signs with it, and never makes
    a key of its own that withdraws it (the tokens it signed would all be refused)."""
    clock, (ring, behind), _ = _keyrings(0.0, -20.0)
    first = ring.signing_key(clock.now)
    assert ring.signing_key(clock.now - 0.005).kid == first.kid
    assert behind.signing_key(clock.now - 20).kid == first.kid
    behind.rotate(clock.now - 20, lead=300)  # an operator on the process behind
    assert ring.verification_key(first.kid, clock.now + 3600) is not None
    assert len(ring.all_keys()) == 2


def test_a_pending_key_that_may_be_signing_somewhere_is_not_withdrawn() -> None:
    """A process whose clock is ahead starts signing with a pending key before the others'
    clocks reach its activation; a rotation made meanwhile retires that key after its tokens'
    life instead of withdrawing it at once."""
    clock, (ring, ahead), _ = _keyrings(0.0, 20.0)
    ring.signing_key(clock.now)
    pending = ring.rotate(clock.now, lead=300)
    clock.now += 290
    assert ahead.signing_key(clock.now + 20).kid == pending.kid
    ring.rotate(clock.now, lead=600)
    assert ring.verification_key(pending.kid, clock.now + 20 + 3600) is not None
    assert ahead.signing_key(clock.now + 20).kid == pending.kid  # until the new one takes over


def test_processes_each_within_the_skew_of_the_true_time_never_cut_a_token_short() -> None:
    """Each process may be 30 s off the true time, so two may be 60 s apart: the one ahead
    signs with a pending key 60 s of the other's clock before its activation, and the one
    behind rotating then (with a `now` read a second early) neither withdraws that key nor
    retires it before its tokens expire."""
    clock, (behind, ahead), table = _keyrings(-30.0, 30.0)
    behind.signing_key(clock.now - 30)
    pending = behind.rotate(clock.now - 30, lead=300)
    clock.now += 240
    signed_at = clock.now + 30
    assert ahead.signing_key(signed_at).kid == pending.kid
    behind.rotate(clock.now - 30 - EARLY_READ, lead=600)
    retire_at = table.rows[pending.kid].retire_at
    assert retire_at is not None and retire_at >= signed_at + 3600 + 2 * 30


def test_a_key_reread_from_the_store_is_judged_as_read() -> None:
    """A verifier that rereads the keys judges a key by what it read, not by its copy from
    before: a later rotation moved the key's retirement, and the key is handed out to sign."""
    clock, (signer, verifier), _ = _keyrings(0.0, 0.0)
    first = signer.signing_key(clock.now)
    signer.rotate(clock.now, lead=300)
    assert verifier.verification_key(first.kid, clock.now) is not None  # its copy: ends early
    signer.rotate(clock.now + 1, lead=86400)  # supersedes: the first key signs for a day more
    clock.now += 4000
    assert signer.signing_key(clock.now).kid == first.kid
    assert verifier.verification_key(first.kid, clock.now) is not None


def test_tasks_started_at_once_on_a_new_store_all_keep_their_tokens(tmp_path: Path) -> None:
    """The first signing key is made by whichever exchange comes first; the others, whose
    clocks were read a moment before it was made, sign with it too. (They made keys of their
    own that withdrew it, and the first task's token was refused from its next call on.)"""
    with Guard(Store.at_home(tmp_path)) as guard:
        _setup(guard)
        grant(guard, tools=("read_file",))
        assert _calls_of_tasks_started_together(guard, 6) == [Effect.ALLOW] * 18
        assert len(guard.credentials.keyring.all_keys()) == 1


def _calls_of_tasks_started_together(guard: Guard, agents: int) -> list[Effect]:
    """Each of `agents` threads starts a task at the same moment and calls read_file three
    times in it: the effects."""
    start = threading.Barrier(agents)
    effects: list[Effect] = []

    def agent() -> None:
        start.wait()
        with guard.task(
            workspace="acme", agent="planner", user="alice", request="", tools=["read_file"]
        ) as task:
            effects.extend(task.authorize("read_file", {}).effect for _ in range(3))

    threads = [threading.Thread(target=agent) for _ in range(agents)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return effects


@settings(max_examples=300, deadline=None)
@given(
    offsets=st.tuples(st.floats(-30, 30), st.floats(-30, 30)),
    steps=st.lists(
        st.tuples(
            st.floats(0, 5000), st.booleans(), st.none() | st.floats(0, 86400), st.floats(0, 1)
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_no_key_that_signed_retires_before_its_tokens_expire(
    offsets: tuple[float, float], steps: list[tuple[float, bool, float | None, float]]
) -> None:
    """Two processes whose clocks are each up to the allowed skew off the true time, each
    calling with a `now` read up to a second before, rotating with any lead or signing: every
    key handed out to sign at a time verifies until a token signed then expires."""
    clock, rings, table = _keyrings(*offsets)
    signed: list[tuple[str, float]] = []
    for advance, second, lead, late in steps:
        clock.now += advance
        ring = rings[second]
        now = clock.now + offsets[second] - late
        if lead is not None:
            ring.rotate(now, lead=lead)
        signed.append((ring.signing_key(now).kid, now))
    for kid, at in signed:
        retire_at = table.rows[kid].retire_at
        assert retire_at is None or retire_at >= at + 3600, (kid, at, retire_at)
