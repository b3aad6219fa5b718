"""Per-agent rate limits, on a clock the test moves."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from joserfc.jwk import ECKey

from tether import Guard
from tether.credentials import Settings, make_proof
from tether.identity import generate_key
from tether.pdp import ProofRule
from tether.server.app import create_app
from tether.server.limits import MAX_BUCKETS, OverBurst, RateLimits
from tether.store import Store


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    now = [0.0]
    limits = RateLimits(rate=10.0, burst=20.0, clock=lambda: now[0])
    assert all(limits.take("acme/coder") is None for _ in range(20))
    wait = limits.take("acme/coder")
    assert wait is not None and 0.09 < wait <= 0.1
    assert limits.take("acme/planner") is None  # each agent its own bucket
    now[0] += 0.5  # five calls' worth
    assert all(limits.take("acme/coder") is None for _ in range(5))
    assert limits.take("acme/coder") is not None
    with pytest.raises(OverBurst):  # never more than the burst: no wait would do
        limits.take("acme/coder", count=30)


def test_the_token_endpoint_is_limited_by_address(home: Path) -> None:
    """Anyone may knock on the token endpoint, and each knock costs a signature check or more:
    past the rate, callers from one address are told to wait before anything is read."""
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange"}

    async def knock(app: Any) -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [(await client.post("/v1/token", data=form)).status_code for _ in range(3)]

    with Guard.embedded(home=home) as guard:
        app = create_app(guard, public_url="http://testserver", limits=RateLimits(1.0, 2.0))
        statuses = anyio.run(knock, app)
    assert statuses == [400, 400, 429], statuses  # refused as malformed, then not read at all


def test_only_a_proven_request_counts_against_its_agent(home: Path) -> None:
    """A thief holding an agent's task token but not its key (no proof, or one signed with
    another key) is limited by its address: it cannot use up the agent's rate, whose own
    proven calls go through, and count against the agent."""
    with _planner_task(home) as (authorize, key, proof):
        thief = [None, None, proof(generate_key()), None]
        assert authorize(thief) == [401, 401, 401, 429]  # its address's rate
        assert authorize([proof(key) for _ in range(4)]) == [200, 200, 200, 429]  # the agent's


def test_a_captured_proof_replayed_counts_against_its_agent_once(home: Path) -> None:
    """A thief who captured a task token with one of its proofs (from a log, say) can replay
    them until the proof is too old: each replay is refused, and after the first sighting
    counts against the sender's address, not the agent, whose own calls still go through."""
    with _planner_task(home) as (authorize, key, proof):
        captured = proof(key)
        statuses = authorize([captured] * 5 + [proof(key) for _ in range(3)])
    # the holder's call; four replays (three on the address's burst, then told to wait); the
    # holder's next two calls, on what the agent's rate has left; then the agent's rate is out
    assert statuses == [200, 401, 401, 401, 429, 200, 200, 429], statuses


def test_proofs_are_remembered_while_young_and_at_most_as_many_as_buckets() -> None:
    later = time.time() + 60
    limits = RateLimits(rate=1.0, burst=3.0)
    assert limits.first_sighting("old", time.time() - 1)  # too old to pass a check already:
    assert limits.first_sighting("p1", later)  # forgotten as the next one comes
    assert not limits.first_sighting("p1", later)
    assert limits.first_sighting("old", later) and not limits.first_sighting("old", later)
    few = RateLimits(rate=1.0, burst=3.0, size=2)
    assert few.first_sighting("p1", later) and few.first_sighting("p2", later)
    assert few.first_sighting("p3", later)  # two at most: the oldest, p1, goes
    assert few.first_sighting("p1", later) and not few.first_sighting("p3", later)


Authorize = Callable[[list[str | None]], list[int]]


@contextmanager
def _planner_task(home: Path) -> Iterator[tuple[Authorize, ECKey, Callable[[ECKey], str]]]:
    """A service whose rate limit never refills (1 a second, 3 at once, on a stopped clock: it
    counts) and a task of the planner's on it. Yields what sends the task's authorize requests
    with the proofs given (None: no proof) and says their statuses; the planner's key; and
    what signs a proof of the task's token, for /v1/authorize, with a key."""
    public = "http://testserver"
    authorize_url = f"{public}/v1/authorize"
    limits = RateLimits(rate=1.0, burst=3.0, clock=lambda: 0.0)
    with Guard(
        Store.at_home(home),
        credential_settings=Settings(token_url=f"{public}/v1/token"),
        proofs=ProofRule(htm="POST", htu=authorize_url, required=True),
    ) as guard:
        guard.add_workspace("acme")
        guard.add_user("acme", "alice")
        guard.register_agent("acme", "planner", kind="planner", owner="alice@acme.com")
        guard.register_tool("acme", "read_file", effects=["read"])
        guard.activate_policies("acme", {"all.cedar": "permit (principal, action, resource);"})
        guard.grant("acme", user="alice", agent="planner", tools=["read_file"])
        app = create_app(guard, public_url=public, limits=limits)
        with guard.task(
            workspace="acme", agent="planner", user="alice", request="", tools=["read_file"]
        ) as task:
            token = task.token

            def proof(signer: ECKey) -> str:
                now = guard._clock()
                return make_proof(
                    signer, htm="POST", htu=authorize_url, now=now, access_token=token
                )

            async def send(proofs: list[str | None]) -> list[int]:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url=public) as client:
                    statuses = []
                    for dpop in proofs:
                        headers = {"authorization": f"DPoP {token}"}
                        if dpop is not None:
                            headers["dpop"] = dpop
                        body = {"tool": "read_file", "args": {}}
                        answer = await client.post("/v1/authorize", json=body, headers=headers)
                        statuses.append(answer.status_code)
                    return statuses

            def authorize(proofs: list[str | None]) -> list[int]:
                return anyio.run(send, proofs)

            yield authorize, guard.agent_keys.get("acme", "planner"), proof


def test_a_charge_over_the_burst_is_refused_as_too_large_and_charges_nothing() -> None:
    now = [0.0]
    limits = RateLimits(rate=10.0, burst=50.0, clock=lambda: now[0])
    for _ in range(3):  # however long one waits
        with pytest.raises(OverBurst) as refused:
            limits.take("acme/coder", count=60)
        assert refused.value.largest == 50
        now[0] += 3600
    assert limits.take("acme/coder", count=50) is None  # the whole burst was still there


@pytest.mark.parametrize("size", [4, 5])  # 4: the request's own one and 3 more
def test_a_batch_over_the_burst_is_a_413_naming_the_largest_batch_not_a_429(
    home: Path, size: int
) -> None:
    """A batch of more calls than the burst could never go: the service says so (no
    Retry-After to wait on) and names the largest batch it takes."""
    limits = RateLimits(rate=1.0, burst=3.0, clock=lambda: 0.0)
    batch = {"calls": [{"tool": "read_file", "args": {}}] * size}

    async def send(app: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            headers = {"authorization": "DPoP not-a-token"}
            return await client.post("/v1/authorize/batch", json=batch, headers=headers)

    with Guard.embedded(home=home) as guard:
        answer = anyio.run(send, create_app(guard, public_url="http://testserver", limits=limits))
    assert answer.status_code == 413, answer.text
    assert "retry-after" not in answer.headers
    assert "at most 3 calls a batch" in answer.json()["detail"]


def test_the_bucket_table_is_bounded_and_a_busy_caller_keeps_its_bucket() -> None:
    """Past MAX_BUCKETS callers all seen within the minute, the least recently used is
    forgotten (one at a time, not the whole table rebuilt), never a caller that keeps calling:
    its bucket stays empty however many new callers come."""
    limits = RateLimits(rate=1.0, burst=2.0, clock=lambda: 0.0)  # never refills
    assert limits.take("acme/busy", 2) is None
    for i in range(MAX_BUCKETS + 10):
        limits.take(f"address/{i}")
        if i % 1000 == 0:
            assert limits.take("acme/busy") is not None
    assert limits.callers() == MAX_BUCKETS
    assert limits.take("acme/busy") is not None
    assert limits.take("address/0") is None  # the least recent, forgotten: a new bucket
