"""The HTTP service, run for real: `tether serve` in its own process on 127.0.0.1, spoken to over
HTTP by an agent holding its own key (token exchange, DPoP proofs) and by people holding admin
tokens. Who may call what is checked for every endpoint of the OpenAPI document, so a new
endpoint cannot forget it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import STARTER
from joserfc.jwk import ECKey
from served import free_port, serve, stop

from tether import Guard
from tether.credentials import ACCESS_TOKEN_TYPE, GRANT_TOKEN_TYPE, make_assertion, make_proof
from tether.identity import generate_key, register_key
from tether.server import admin_tokens

ANY_PATH = {
    "workspace": "acme",
    "agent": "coder",
    "task_id": "task_x",
    "approval_id": "apr_x",
    "decision_id": "dec_x",
    "grant_id": "grant_x",
    "kid": "kid_x",
    "tool": "read_file",
}
# Endpoints whose workspace is the resource's: with no such resource, there is no workspace to
# hold a token to, and the answer is 404 whoever asks.
BY_RESOURCE = (
    "/apr_x",
    "/apr_x/approve",
    "/apr_x/deny",
    "/dec_x",
    "/grant_x/revoke",
    "/task_x/revoke",
)


@dataclass
class Server:
    url: str
    home: Path
    admin: str  # admin@* token
    approver: str  # bob's token: approver in acme
    auditor_elsewhere: str  # auditor of another workspace only
    expired: str
    coder_key: ECKey
    grant: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("served")
    key = generate_key()
    with Guard.embedded(home=home) as guard:
        guard.apply_directory(STARTER)
        register_key(
            guard.store,
            workspace="acme",
            agent="coder",
            jwk=key.as_dict(private=False),
            now=time.time(),
        )
        grant = next(g for g in guard.store.credentials.grants("acme") if g.agent == "coder").id
        now = time.time()
        tokens = {
            name: admin_tokens.issue(guard.store, name=who, roles=roles, lifetime=life, now=now)[0]
            for name, who, roles, life in (
                ("admin", "alice", {"*": ["admin"]}, 3600),
                ("approver", "bob", {"acme": ["approver"]}, 3600),
                ("elsewhere", "carol", {"other": ["auditor"]}, 3600),
                ("expired", "dave", {"*": ["admin"]}, 0.001),
            )
        }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = serve(home, port)
    try:
        yield Server(
            url,
            home,
            tokens["admin"],
            tokens["approver"],
            tokens["elsewhere"],
            tokens["expired"],
            key,
            grant,
        )
    finally:
        stop(child)


class Agent:
    """An agent elsewhere, in any language: its key, a token exchange, a proof per request."""

    def __init__(self, server: Server, name: str = "coder") -> None:
        self.server, self.name, self.key = server, name, server.coder_key
        self.http = httpx.Client(base_url=server.url, timeout=10)
        self.token = ""
        self.task_id = ""

    def start(self, tools: str = "read_file send_email delete_branch") -> httpx.Response:
        url = f"{self.server.url}/v1/token"
        now = time.time()
        assertion = make_assertion(
            self.key,
            agent_id=f"spiffe://tether.local/ws/acme/agent/{self.name}",
            audience="tether",
            now=now,
        )
        response = self.http.post(
            "/v1/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": self.server.grant,
                "subject_token_type": GRANT_TOKEN_TYPE,
                "actor_token": assertion,
                "requested_token_type": ACCESS_TOKEN_TYPE,
                "scope": tools,
                "request": "tidy the repo",
            },
            headers={"DPoP": make_proof(self.key, htm="POST", htu=url, now=now)},
        )
        if response.status_code == 200:
            self.token, self.task_id = response.json()["access_token"], response.json()["task_id"]
        return response

    def post(self, path: str, body: Any, *, proof: bool = True) -> httpx.Response:
        headers = {"Authorization": f"DPoP {self.token}"}
        if proof:
            headers["DPoP"] = make_proof(
                self.key,
                htm="POST",
                htu=f"{self.server.url}{path}",
                now=time.time(),
                access_token=self.token,
            )
        return self.http.post(path, json=body, headers=headers)

    def authorize(self, tool: str, args: Any) -> httpx.Response:
        return self.post("/v1/authorize", {"tool": tool, "args": args})


def admin(server: Server, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
    )


def test_an_unknown_path_or_method_is_a_problem_document_too(server: Server) -> None:
    missing = httpx.get(f"{server.url}/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    wrong = httpx.delete(f"{server.url}/healthz")
    assert wrong.status_code == 405 and wrong.json()["status"] == 405


def test_health_and_keys_are_public(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "detail": ""}
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"
    keys = httpx.get(f"{server.url}/.well-known/jwks.json").json()["keys"]
    assert keys and all(k["kty"] == "EC" and "d" not in k for k in keys)


def test_an_agent_exchanges_its_grant_and_every_call_is_decided(server: Server) -> None:
    agent = Agent(server)
    assert agent.start().status_code == 200
    allowed = agent.authorize("read_file", {"path": "/repo/README.md"})
    assert allowed.status_code == 200 and allowed.json()["effect"] == "allow"
    assert allowed.json()["task_id"] == agent.task_id
    refused = agent.authorize("send_email", {"to": "eve@evil.io", "subject": "x", "body": "y"})
    assert refused.status_code == 200 and refused.json()["effect"] == "deny"
    assert refused.json()["reasons"][0]["text"]
    reported = agent.post(
        f"/v1/tasks/{agent.task_id}/report",
        {"decision_id": allowed.json()["decision_id"], "output": "# readme"},
    )
    assert reported.status_code == 200, reported.text
    assert agent.post(f"/v1/tasks/{agent.task_id}/end", None).status_code == 200
    after = agent.authorize("read_file", {"path": "/repo/README.md"})
    assert after.status_code == 401 and "ended" in after.json()["detail"]


def test_a_call_without_its_proof_or_with_a_replayed_one_is_refused(server: Server) -> None:
    agent = Agent(server)
    assert agent.start().status_code == 200
    unproven = agent.post("/v1/authorize", {"tool": "read_file", "args": {}}, proof=False)
    assert unproven.status_code == 401 and unproven.headers["content-type"].startswith(
        "application/problem+json"
    )
    proof = make_proof(
        agent.key,
        htm="POST",
        htu=f"{server.url}/v1/authorize",
        now=time.time(),
        access_token=agent.token,
    )
    headers = {"Authorization": f"DPoP {agent.token}", "DPoP": proof}
    body = {"tool": "read_file", "args": {"path": "/repo/a"}}
    assert agent.http.post("/v1/authorize", json=body, headers=headers).status_code == 200
    again = agent.http.post("/v1/authorize", json=body, headers=headers)
    assert again.status_code == 401 and "replay" in again.json()["detail"].lower()


APPROVAL_POLICY = """
@id("destructive-needs-a-person")
@reason("destructive changes need a person's approval")
@approval("approver")
forbid (principal, action in Action::"destructive", resource) unless { context.approved };
"""


def test_a_call_waits_for_a_person_who_approves_it_over_http(server: Server) -> None:
    files = {p.name: p.read_text() for p in (STARTER / "policies").glob("*.cedar")}
    files["approvals.cedar"] = APPROVAL_POLICY
    with admin(server, server.admin) as alice:
        checked = alice.post("/v1/workspaces/acme/policies/validate", json={"files": files})
        assert checked.status_code == 200, checked.text
        activated = alice.post("/v1/workspaces/acme/policies", json={"files": files})
        assert activated.json()["version"] == checked.json()["version"]
    agent = Agent(server)
    assert agent.start().status_code == 200
    asked = agent.authorize("delete_branch", {"branch": "old"}).json()
    assert asked["effect"] == "approval_required" and asked["approval_id"]
    with admin(server, server.approver) as bob:
        pending = bob.get("/v1/workspaces/acme/approvals").json()
        assert asked["approval_id"] in {p["id"] for p in pending}
        answer = bob.post(f"/v1/approvals/{asked['approval_id']}/approve", json={"comment": "ok"})
        assert answer.status_code == 200 and answer.json()["decided_by"] == "bob"
    assert agent.authorize("delete_branch", {"branch": "old"}).json()["effect"] == "allow"


def test_the_log_can_be_read_and_verified_over_http(server: Server) -> None:
    agent = Agent(server)
    assert agent.start().status_code == 200
    decided = agent.authorize("read_file", {"path": "/repo/x"}).json()
    with admin(server, server.admin) as alice:
        found = alice.get("/v1/workspaces/acme/decisions", params={"agent": "coder"}).json()
        assert decided["decision_id"] in {r["id"] for r in found}
        one = alice.get(f"/v1/decisions/{decided['decision_id']}").json()
        assert one["hash"] and one["tool"] == "read_file"
        assert alice.post("/v1/audit/verify").json()["intact"] is True
        assert "tether_http_requests" in alice.get("/metrics").text


def test_bad_input_gets_a_clear_4xx_never_a_stack_trace(server: Server) -> None:
    agent = Agent(server)
    assert agent.start().status_code == 200
    for body in (b"{not json", b'{"tool": 3}', b'{"tool": "read_file", "extra": 1}'):
        response = agent.http.post(
            "/v1/authorize",
            content=body,
            headers={
                "Authorization": f"DPoP {agent.token}",
                "Content-Type": "application/json",
                "DPoP": make_proof(
                    agent.key,
                    htm="POST",
                    htu=f"{server.url}/v1/authorize",
                    now=time.time(),
                    access_token=agent.token,
                ),
            },
        )
        assert response.status_code == 400, response.text
        assert "Traceback" not in response.text and response.json()["detail"]
    huge = agent.http.post("/v1/authorize", content=b"x" * (2 << 20))
    # The body was not read, so the connection is closed after the answer, and says so: a
    # client that reused it would find it gone (seen once: "Server disconnected").
    assert huge.status_code == 413 and huge.headers["connection"] == "close"
    not_utf8 = agent.http.post(
        "/v1/token",
        content=b"grant_type=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.json()["detail"]


def _operations(server: Server) -> list[tuple[str, str, str]]:
    with admin(server, server.admin) as alice:
        document = alice.get("/openapi.json").json()
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            concrete = path.format(**ANY_PATH)
            found.append((method.upper(), concrete, operation["x-tether-auth"]))
    return found


def test_every_endpoint_refuses_a_missing_wrong_or_expired_credential(server: Server) -> None:
    operations = _operations(server)
    assert len(operations) >= 20
    for method, path, auth in operations:
        if auth in ("none", "token"):
            continue
        bare = httpx.request(method, f"{server.url}{path}", json={})
        assert bare.status_code == 401, (method, path, bare.text)
        with admin(server, server.expired) as expired:
            assert expired.request(method, path, json={}).status_code == 401, (method, path)
        if auth.startswith("agent"):
            with admin(server, server.admin) as wrong_kind:  # an admin token is no task token
                assert wrong_kind.request(method, path, json={}).status_code == 401
            continue
        with admin(server, server.auditor_elsewhere) as carol:  # another workspace's auditor
            answer = carol.request(method, path, json={})
            if (method, path) == ("GET", "/v1/workspaces"):  # only what the token covers
                assert answer.status_code == 200 and answer.json() == []
            elif path.endswith(BY_RESOURCE):
                assert answer.status_code == 404, (method, path, answer.text)
            else:
                assert answer.status_code == 403, (method, path, answer.text)
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/openapi.json").status_code == 401


def test_an_approver_of_one_workspace_cannot_act_in_another(server: Server) -> None:
    with admin(server, server.approver) as bob:
        assert bob.post("/v1/workspaces/acme/agents/coder/suspend").status_code == 403
        checked = {"agent": "planner", "user": "alice", "tool": "read_file", "args": {}}
        assert bob.post("/v1/workspaces/acme/check", json=checked).status_code == 403
        assert bob.get("/v1/workspaces/other/approvals").status_code == 403
        refused = bob.post("/v1/workspaces/acme/policies", json={"files": {}})
        assert refused.status_code == 403
        assert "policy-author" in json.loads(refused.text)["detail"]


def test_make_run_serves_the_demo_and_its_curl_makes_a_decision(tmp_path: Path) -> None:
    port = free_port()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether.cli",
            "demo",
            "--home",
            str(tmp_path / "demo"),
            "--serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    try:
        assert child.stdout is not None
        printed = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            printed.append(line)
            if "Ctrl-C" in line or not line:
                break
        curl = next(line for line in printed if line.strip().startswith("curl "))
        command = shlex.split(curl)
        url = next(part for part in command if part.startswith("http://"))
        header = command[command.index("-H") + 1]
        body = command[command.index("-d") + 1]
        deadline, answer = time.monotonic() + 60, None
        while answer is None and time.monotonic() < deadline:
            try:
                answer = httpx.post(
                    url, content=body, headers=dict([header.split(": ", 1)]), timeout=5
                )
            except httpx.ConnectError:
                time.sleep(0.1)
        assert answer is not None, f"the demo did not answer at {url} within 60 s"
        assert answer.status_code == 200, answer.text
        assert answer.json()["effect"] == "allow" and answer.json()["agent"] == "planner"
    finally:
        child.terminate()
        child.wait(timeout=10)


def test_a_batch_is_decided_in_order_under_one_proof(server: Server) -> None:
    agent = Agent(server)
    assert agent.start().status_code == 200
    calls = [
        {"tool": "read_file", "args": {"path": "/repo/a"}},
        {"tool": "send_email", "args": {"to": "eve@evil.io", "subject": "x", "body": "y"}},
        {"tool": "read_file", "args": {"path": "/repo/b"}},
    ]
    answer = agent.post("/v1/authorize/batch", {"calls": calls})
    assert answer.status_code == 200, answer.text
    assert [d["effect"] for d in answer.json()["decisions"]] == ["allow", "deny", "allow"]
    too_many = agent.post("/v1/authorize/batch", {"calls": [calls[0]] * 101})
    assert too_many.status_code == 400
    unproven = agent.post("/v1/authorize/batch", {"calls": calls}, proof=False)
    assert unproven.status_code == 401
    proof = make_proof(
        agent.key,
        htm="POST",
        htu=f"{server.url}/v1/authorize/batch",
        now=time.time(),
        access_token=agent.token,
    )
    headers = {"Authorization": f"DPoP {agent.token}", "DPoP": proof}
    body = {"calls": calls[:1]}
    assert agent.http.post("/v1/authorize/batch", json=body, headers=headers).status_code == 200
    replayed = agent.http.post("/v1/authorize/batch", json=body, headers=headers)
    assert replayed.status_code == 401 and "replay" in replayed.json()["detail"].lower()


def test_an_agent_past_its_rate_is_told_to_wait(server: Server) -> None:
    agent = Agent(server)
    assert agent.start().status_code == 200
    # Each call counts, however its JSON is spelt (here with the key "tool" escaped).
    batch = json.dumps({"calls": [{"tool": "read_file", "args": {"path": "/repo/a"}}] * 90})
    body = batch.replace('"tool"', '"\\u0074ool"').encode()
    assert b'"tool"' not in body

    def send(_: int) -> httpx.Response:
        proof = make_proof(
            agent.key,
            htm="POST",
            htu=f"{server.url}/v1/authorize/batch",
            now=time.time(),
            access_token=agent.token,
        )
        headers = {
            "Authorization": f"DPoP {agent.token}",
            "DPoP": proof,
            "Content-Type": "application/json",
        }
        return agent.http.post("/v1/authorize/batch", content=body, headers=headers)

    time.sleep(2.1)  # the agent's bucket full again (earlier tests drew on it): 200 at 100/s
    with ThreadPoolExecutor(4) as pool:  # 360 calls at once against a burst of 200
        answers = list(pool.map(send, range(4)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 429, 429], statuses
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1


def test_a_resource_of_another_workspace_reads_as_one_that_does_not_exist(
    server: Server,
) -> None:
    """Carol holds no role in acme: she cannot tell its decisions' ids from made-up ones. Bob
    (an approver there, not an auditor) is refused for his role."""
    agent = Agent(server)  # a decision of its own: tests of this module may run apart
    assert agent.start().status_code == 200
    decided = agent.authorize("read_file", {"path": "/repo/a"}).json()["decision_id"]
    with admin(server, server.auditor_elsewhere) as carol:
        real, made_up = carol.get(f"/v1/decisions/{decided}"), carol.get("/v1/decisions/dec_x")
        assert real.status_code == made_up.status_code == 404
        assert real.json()["detail"] == f"no decision {decided!r}"
        assert made_up.json()["detail"] == "no decision 'dec_x'"
    with admin(server, server.approver) as bob:
        refused = bob.get(f"/v1/decisions/{decided}")
        assert refused.status_code == 403 and "auditor" in refused.json()["detail"]


def test_an_agent_cannot_tell_another_tasks_decision_ids_from_made_up_ones(server: Server) -> None:
    """Reporting an output names a decision: one of another task (here another agent's, in the
    same workspace) is answered as an id no task has, not as someone else's."""
    mine, theirs = Agent(server), Agent(server)
    assert mine.start().status_code == 200 and theirs.start().status_code == 200
    decided = theirs.authorize("read_file", {"path": "/repo/a"}).json()["decision_id"]
    path = f"/v1/tasks/{mine.task_id}/report"
    real = mine.post(path, {"decision_id": decided, "output": "x"})
    made_up = mine.post(path, {"decision_id": "dec_" + "0" * 32, "output": "x"})
    assert real.status_code == made_up.status_code == 404, (real.text, made_up.text)
    assert real.json()["detail"].replace(decided, "ID") == made_up.json()["detail"].replace(
        "dec_" + "0" * 32, "ID"
    )


def test_suspending_an_agent_over_http_refuses_its_next_call(server: Server) -> None:
    """(Last in this module: a suspension refuses every token issued until shortly after it,
    resumed or not, so the agent starts no task for a while.)"""
    agent = Agent(server)
    assert agent.start().status_code == 200
    with admin(server, server.admin) as alice:
        assert alice.post("/v1/workspaces/acme/agents/coder/suspend").status_code == 200
        try:
            refused = agent.authorize("read_file", {"path": "/repo/README.md"})
            assert refused.status_code == 401 and "suspended" in refused.json()["detail"]
        finally:
            assert alice.post("/v1/workspaces/acme/agents/coder/resume").status_code == 200


def test_a_candidate_bundle_is_tested_over_http(server: Server) -> None:
    policies = STARTER / "policies"  # as `tether init` lays it out: the baseline pack beside
    baseline = STARTER.parents[2] / "policies" / "baseline"
    files = {p.name: p.read_text() for p in [*policies.glob("*.cedar"), *baseline.glob("*.cedar")]}
    tests = (policies / "tests.yaml").read_text()
    with admin(server, server.admin) as alice:
        ran = alice.post("/v1/workspaces/acme/policies/test", json={"files": files, "tests": tests})
        assert ran.status_code == 200, ran.text
        report = ran.json()
        assert report["failed"] == 0 and report["passed"] == len(report["cases"]) > 5
        # The same cases against a bundle without the workspace-wide rules: some must fail.
        fewer = {name: text for name, text in files.items() if name != "workspace.cedar"}
        ran = alice.post("/v1/workspaces/acme/policies/test", json={"files": fewer, "tests": tests})
        assert ran.status_code == 200 and ran.json()["failed"] > 0
        bad = alice.post("/v1/workspaces/acme/policies/test", json={"files": files, "tests": "["})
        assert bad.status_code == 400 and "tests" in bad.json()["detail"]


def test_the_workspace_list_gives_whole_records_only_where_the_token_may_read_them(
    server: Server,
) -> None:
    """`GET /v1/workspaces/{workspace}` needs `auditor`: the list gives a token holding only
    another role there (bob, approver of acme) the name alone, not the settings (webhook URLs
    are secrets); an admin gets the whole record."""
    with admin(server, server.approver) as bob:
        assert bob.get("/v1/workspaces/acme").status_code == 403
        listed = bob.get("/v1/workspaces")
    assert listed.status_code == 200
    assert listed.json() == [
        {
            "name": "acme",
            "tenant": None,
            "trust_domain": None,
            "created_at": None,
            "revision": None,
            "active_policy_version": None,
            "settings": None,
            "shadow_policy_version": None,
        }
    ]
    with admin(server, server.admin) as alice:
        whole = alice.get("/v1/workspaces/acme").json()
        assert [w for w in alice.get("/v1/workspaces").json() if w["name"] == "acme"] == [whole]
