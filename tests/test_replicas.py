"""Two `tether serve` replicas on one store (the home's SQLite file in the SQLite run, one
PostgreSQL database in the PostgreSQL run): a task's calls may land on either, and a change made
through one is enforced by the other within a second."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import delegate
from prometheus_client.multiprocess import MultiProcessCollector
from served import free_port, serve, stop
from test_shared_tasks import PATH, POLICIES

from tether import Guard
from tether.credentials import ACCESS_TOKEN_TYPE, GRANT_TOKEN_TYPE, make_assertion, make_proof
from tether.identity import generate_key, register_key
from tether.server import admin_tokens


def _serve(
    home: Path, *options: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    return serve(home, port, *options, env=env), f"http://127.0.0.1:{port}"


class Agent:
    """The coder agent, holding its key; each call names the replica it goes to."""

    def __init__(self, key: Any, grant: str) -> None:
        self.key, self.grant = key, grant
        self.http = httpx.Client(timeout=10)
        self.token = ""

    def start(self, url: str) -> None:
        now = time.time()
        answer = self.http.post(
            f"{url}/v1/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": self.grant,
                "subject_token_type": GRANT_TOKEN_TYPE,
                "actor_token": make_assertion(
                    self.key,
                    agent_id="spiffe://tether.local/ws/acme/agent/coder",
                    audience="tether",
                    now=now,
                ),
                "requested_token_type": ACCESS_TOKEN_TYPE,
                "scope": "http_post read_file read_secret",
                "request": "tidy the repo",
            },
            headers={"DPoP": make_proof(self.key, htm="POST", htu=f"{url}/v1/token", now=now)},
        )
        assert answer.status_code == 200, answer.text
        self.token, self.task_id = answer.json()["access_token"], answer.json()["task_id"]

    def post(self, url: str, path: str, body: Any) -> httpx.Response:
        proof = make_proof(
            self.key, htm="POST", htu=f"{url}{path}", now=time.time(), access_token=self.token
        )
        headers = {"Authorization": f"DPoP {self.token}", "DPoP": proof}
        return self.http.post(f"{url}{path}", json=body, headers=headers)

    def call(self, url: str, tool: str, args: dict[str, str] | None = None) -> dict[str, Any]:
        answer = self.post(url, "/v1/authorize", {"tool": tool, "args": args or {}})
        assert answer.status_code in (200, 401), answer.text
        decided: dict[str, Any] = answer.json()
        return decided


def prepare(home: Path, roles: dict[str, list[str]]) -> tuple[Any, str, str]:
    """The workspace of test_shared_tasks on `home`'s store: the agent's key, alice's grant,
    and an admin token holding `roles`."""
    key = generate_key()
    with Guard.embedded(home) as guard:
        guard.add_workspace("acme")
        guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        guard.register_tool("acme", "read_file", effects=["read"], args_schema=PATH)
        guard.register_tool("acme", "read_secret", effects=["secret_access"], labels=["secret"])
        guard.register_tool("acme", "http_post", effects=["external"], args_schema=PATH)
        guard.activate_policies("acme", POLICIES)
        delegate(guard, "acme", "coder", users=("alice",))
        register_key(
            guard.store, workspace="acme", agent="coder", jwk=key.as_dict(private=False),
            now=time.time(),
        )  # fmt: skip
        grant = guard.store.credentials.grants("acme")[0].id
        token, _ = admin_tokens.issue(
            guard.store, name="sam", roles=roles, lifetime=3600, now=time.time()
        )
    return key, grant, token


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, str, Agent, str]]:
    """Replica A's URL, replica B's, the agent, and an admin token for acme."""
    home = tmp_path / "home"
    key, grant, token = prepare(home, {"acme": ["admin"]})
    a, url_a = _serve(home)
    try:
        b, url_b = _serve(home)
        try:
            yield url_a, url_b, Agent(key, grant), token
        finally:
            stop(b)
    finally:
        stop(a)


def test_a_task_alternating_replicas_still_trips_its_chain_rules(
    cluster: tuple[str, str, Agent, str],
) -> None:
    a, b, agent, _ = cluster
    agent.start(a)
    reads = [agent.call(url, "read_file", {"path": "/repo/x"})["effect"] for url in (a, b, a, b)]
    assert reads == ["allow", "allow", "allow", "deny"]  # three reads a task, on any replica
    secret = agent.call(b, "read_secret")
    assert secret["effect"] == "allow"
    reported = agent.post(
        b, f"/v1/tasks/{agent.task_id}/report", {"decision_id": secret["decision_id"],
                                                  "output": "the deploy key"},
    )  # fmt: skip
    assert reported.status_code == 200, reported.text
    refused = agent.call(a, "http_post", {"path": "/out"})
    assert refused["effect"] == "deny"
    assert refused["reasons"][0]["policy"] == "no-exfiltration-after-a-secret"


def test_an_agent_suspended_through_one_replica_is_refused_by_the_other_within_a_second(
    cluster: tuple[str, str, Agent, str],
) -> None:
    a, b, agent, token = cluster
    agent.start(b)  # read_secret: a tool no rule limits, so only the suspension can refuse it
    assert agent.call(b, "read_secret")["effect"] == "allow"
    suspended = httpx.post(
        f"{a}/v1/workspaces/acme/agents/coder/suspend",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert suspended.status_code == 200, suspended.text
    at = time.monotonic()
    while agent.call(b, "read_secret").get("effect") == "allow":
        assert time.monotonic() - at < 1.0, "replica B still allows the suspended agent"
        time.sleep(0.02)
    took = time.monotonic() - at
    print(f"replica B refused the suspended agent {took * 1000:.0f} ms after replica A said so")
    refused = agent.call(b, "read_secret")  # and stays so
    # Refused by whichever news came first: the agent's status (a recorded deny) or its
    # tokens' revocation (401, recorded as well).
    why = refused["reasons"][0]["text"] if "effect" in refused else refused["detail"]
    assert refused.get("effect", "deny") == "deny", refused
    assert "suspended" in why or "revoked" in why, why


def _deciding(samples: Path) -> list[Path]:
    """The workers' sample files that count decisions."""
    return [
        file
        for file in samples.glob("counter_*.db")
        if any(
            s.name == "tether_decisions_total" and s.value > 0
            for metric in MultiProcessCollector.merge([str(file)], accumulate=False)
            for s in metric.samples
        )
    ]


def test_the_workers_of_one_serve_share_tasks_and_add_up_their_metrics(tmp_path: Path) -> None:
    """`tether serve --workers 2`: each request on a new connection, so they spread over both
    workers; the task's limit holds across them, and every scrape counts every decision."""
    home = tmp_path / "home"
    key, grant, token = prepare(home, {"*": ["auditor"]})
    samples = tmp_path / "metrics"
    samples.mkdir()
    child, url = _serve(home, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(samples)})
    try:
        agent = Agent(key, grant)
        agent.start(url)
        effects: list[str] = []
        # New connections until both workers have decided some (the kernel picks; bounded).
        while len(effects) < 8 or (len(_deciding(samples)) < 2 and len(effects) < 200):
            agent.http.close()
            agent.http = httpx.Client(timeout=10)  # a new connection: either worker
            effects.append(agent.call(url, "read_file", {"path": "/repo/x"})["effect"])
        assert len(_deciding(samples)) == 2, "one worker took every connection"
        assert effects == ["allow"] * 3 + ["deny"] * (len(effects) - 3)  # the limit held
        for _ in range(6):  # scrapes land on either worker; each sees every decision
            with httpx.Client(timeout=10) as scraper:
                text = scraper.get(
                    f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}
                ).text
            counts = {
                line.split('effect="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("tether_decisions_total{")
            }
            assert counts == {"allow": 3.0, "deny": len(effects) - 3.0}, text
    finally:
        stop(child)


def test_the_metrics_folder_a_serve_made_is_removed_when_it_stops(tmp_path: Path) -> None:
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    scratch.mkdir()
    prepare(home, {"*": ["auditor"]})
    child, _ = _serve(home, "--workers", "2", env={"TMPDIR": str(scratch)})
    try:
        assert [p.name[:15] for p in scratch.iterdir()] == ["tether-metrics-"]
    finally:
        stop(child)
    assert child.returncode == 0 and list(scratch.iterdir()) == []
