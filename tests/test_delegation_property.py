"""Property tests: along any delegation chain, a credential never widens (DESIGN.md section 6).

Two levels. `attenuate` (the pure rule) over arbitrary bounds and requests; then whole chains of
real token exchanges on a real store, checked against a model of what the grant allows: every
exchange succeeds exactly when the model says it may, and every token issued is within its
parent and its grant in scope, expiry, audience and depth.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Clock
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from tether import Guard
from tether.credentials import (
    ACCESS_TOKEN_TYPE,
    GRANT_TOKEN_TYPE,
    ExchangeRequest,
    make_assertion,
    make_proof,
)
from tether.credentials.access_token import AccessClaims
from tether.credentials.token_exchange import Bounds, attenuate
from tether.errors import CredentialRefused
from tether.model import Grant
from tether.store import Store

TOOLS = ("t0", "t1", "t2", "t3", "t4")
AGENTS = ("a0", "a1", "a2", "a3")
CEILINGS: dict[str, tuple[str, ...] | None] = {
    "a0": None,
    "a1": None,
    "a2": ("t0", "t1"),
    "a3": ("t2",),
}
MAX_DEPTH = 4
PDP = "tether:pdp"

tool_sets = st.frozensets(st.sampled_from(TOOLS))


@given(
    held=tool_sets,
    requested=st.none() | tool_sets,
    ceiling=st.none() | tool_sets,
    audience=st.none() | st.sampled_from(["aud", "other"]),
    depth=st.integers(0, 6),
    expires_at=st.floats(0, 2000),
    lifetime=st.floats(1, 600),
    not_after=st.floats(0, 2000),
    now=st.floats(0, 1000),
)
def test_attenuate_never_widens(
    held: frozenset[str],
    requested: frozenset[str] | None,
    ceiling: frozenset[str] | None,
    audience: str | None,
    depth: int,
    expires_at: float,
    lifetime: float,
    not_after: float,
    now: float,
) -> None:
    bounds = Bounds(held, expires_at, "aud", depth)
    try:
        new = attenuate(
            bounds,
            requested=requested,
            ceiling=ceiling,
            audience=audience,
            lifetime=lifetime,
            not_after=not_after,
            now=now,
            max_depth=MAX_DEPTH,
        )
    except CredentialRefused:
        available = held if ceiling is None else held & ceiling
        wanted = available if requested is None else requested
        end = math.floor(min(now + lifetime, expires_at, not_after))
        assert (
            not wanted <= available
            or not wanted
            or audience not in (None, "aud")
            or depth + 1 > MAX_DEPTH
            or end <= now
        ), "refused a request within its bounds"
        return
    assert new.tools <= held and (ceiling is None or new.tools <= ceiling)
    assert requested is None or new.tools == requested
    assert new.expires_at <= min(expires_at, not_after, now + lifetime) and new.expires_at > now
    assert new.audience == bounds.audience
    assert new.depth == depth + 1 <= MAX_DEPTH


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Guard, Clock]]:
    clock = Clock(1_900_000_000.0)
    home: Path = tmp_path_factory.mktemp("delegation")
    with Guard(Store.at_home(home), clock=clock) as guard:
        guard.add_workspace("acme")
        guard.add_user("acme", "alice")
        for name in AGENTS:
            guard.register_agent("acme", name, kind="agent", owner="o", ceiling=CEILINGS[name])
        for tool in TOOLS:
            guard.register_tool("acme", tool, effects=["read"])
        yield guard, clock


@dataclass(frozen=True)
class Held:
    token: str
    claims: AccessClaims
    task_end: float


step = st.tuples(
    st.integers(0, 20),  # which held token to delegate from (or the grant)
    st.just("a0") | st.sampled_from(AGENTS),  # the grant's agent half the time
    st.none() | st.none() | tool_sets,  # the scope asked for (often: whatever is held)
    st.sampled_from([None, PDP, "https://elsewhere"]),
    st.none() | st.floats(1, 2000),  # task ttl
    st.floats(0, 200),  # time passing before the step
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    granted=tool_sets.filter(bool),
    may_act=st.frozensets(st.sampled_from(AGENTS)),
    max_ttl=st.floats(60, 1800),
    lifetime=st.floats(100, 3000),
    steps=st.lists(step, min_size=1, max_size=8),
)
def test_no_sequence_of_exchanges_exceeds_the_grant(
    world: tuple[Guard, Clock],
    granted: frozenset[str],
    may_act: frozenset[str],
    max_ttl: float,
    lifetime: float,
    steps: list[tuple[int, str, frozenset[str] | None, str | None, float | None, float]],
) -> None:
    guard, clock = world
    clock.now += 10_000  # a fresh start: nothing earlier is still alive
    grant = guard.grant(
        "acme",
        user="alice",
        agent="a0",
        tools=sorted(granted),
        may_act=sorted(may_act),
        max_ttl=max_ttl,
        expires_in=lifetime,
    )
    held: list[Held] = []
    issued = 0
    for pick, agent, scope, audience, ttl, wait in steps:
        clock.now += wait
        parent = held[pick % len(held)] if held and pick % 3 else None
        expected = _model(grant, parent, agent, scope, audience, ttl, clock.now)
        request = ExchangeRequest(
            subject_token=grant.id if parent is None else parent.token,
            subject_token_type=GRANT_TOKEN_TYPE if parent is None else ACCESS_TOKEN_TYPE,
            actor_token=make_assertion(
                guard.agent_keys.get("acme", agent),
                agent_id=f"spiffe://tether.local/ws/acme/agent/{agent}",
                audience="tether",
                now=clock.now,
            ),
            subject_proof=None
            if parent is None
            else make_proof(
                guard.agent_keys.get("acme", parent.claims.agent),
                htm="POST",
                htu="tether:token",
                now=clock.now,
                access_token=parent.token,
            ),
            scope=" ".join(sorted(scope)) if scope is not None else None,
            audience=audience,
            task_ttl=ttl,
        )
        try:
            result = guard.credentials.exchange(request)
        except CredentialRefused as exc:
            assert expected is None, f"refused what the grant allows: {exc}"
            continue
        assert expected is not None, f"issued what the grant does not allow: {result.claims}"
        claims = result.claims
        issued += 1
        # Within the grant ...
        assert claims.tools <= set(grant.tools) and claims.sub == grant.user == "alice"
        assert claims.exp <= grant.expires_at and claims.ws == "acme" and claims.grant == grant.id
        ceiling = CEILINGS[agent]
        assert ceiling is None or claims.tools <= set(ceiling)
        # ... and within its parent.
        assert claims.aud == PDP and claims.depth <= MAX_DEPTH
        if parent is not None:
            assert claims.tools <= parent.claims.tools and claims.exp <= parent.claims.exp
            assert claims.depth == parent.claims.depth + 1
            assert claims.chain == (*parent.claims.chain, parent.claims.jti)
        assert claims.tools == expected
        held.append(Held(result.response.access_token, claims, result.task.expires_at))
    target(float(issued))  # steer towards long chains of successful exchanges


def _model(
    grant: Grant,
    parent: Held | None,
    agent: str,
    scope: frozenset[str] | None,
    audience: str | None,
    ttl: float | None,
    now: float,
) -> frozenset[str] | None:
    """What the exchange must yield (its tools), or None if it must be refused."""
    if now >= grant.expires_at:
        return None
    if parent is None:
        if agent != grant.agent:
            return None
        held, depth, ends = frozenset(grant.tools), 0, [grant.expires_at]
        task_ttl = ttl if ttl is not None else min(900.0, grant.max_ttl)
        if not 0 < task_ttl <= grant.max_ttl:
            return None
        ends += [now + task_ttl]
    else:
        if now >= parent.claims.exp or agent not in (grant.agent, *grant.may_act):
            return None
        held = parent.claims.tools & frozenset(grant.tools)
        depth = parent.claims.depth
        task_ttl = ttl if ttl is not None else min(900.0, grant.max_ttl)
        if not 0 < task_ttl <= grant.max_ttl:
            return None
        ends = [parent.claims.exp, grant.expires_at, now + task_ttl, parent.task_end]
    ceiling = CEILINGS[agent]
    available = held if ceiling is None else held & frozenset(ceiling)
    wanted = available if scope is None else scope
    if not wanted or not wanted <= available:
        return None
    if audience not in (None, PDP) or depth + 1 > MAX_DEPTH:
        return None
    if math.floor(min(now + 300, *ends)) <= now:
        return None
    return wanted
