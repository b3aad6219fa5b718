"""Hostile input at the HTTP API (`tether serve` in its own process): every body here gets a
4xx with a clear message or a recorded deny, never a 5xx or a trace, and the log still
verifies afterwards. A body two parsers could read two ways is not decided at all."""

from __future__ import annotations

import time

import httpx
import pytest
from test_server import Agent, Server, admin, server  # noqa: F401 - the module's service

from tether.credentials import make_proof

pytestmark = pytest.mark.sqlite  # one service for the module, on its home's SQLite file


def post_raw(agent: Agent, body: bytes, path: str = "/v1/authorize") -> httpx.Response:
    url = f"{agent.server.url}{path}"
    return agent.http.post(
        path,
        content=body,
        headers={
            "Authorization": f"DPoP {agent.token}",
            "Content-Type": "application/json",
            "DPoP": make_proof(
                agent.key, htm="POST", htu=url, now=time.time(), access_token=agent.token
            ),
        },
    )


@pytest.fixture(scope="module")
def agent(server: Server) -> Agent:  # noqa: F811
    started = Agent(server)
    assert started.start().status_code == 200
    return started


def refused(answer: httpx.Response, why: str) -> None:
    assert answer.status_code == 400, answer.text
    assert why in answer.json()["detail"]
    assert "Traceback" not in answer.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"tool": "read_file", "tool": "delete_branch", "args": {"branch": "main"}}',
        b'{"tool": "read_file", "args": {"path": "/etc/passwd", "path": "/repo/a.py"}}',
        b'{"tool": "read_file", "args": {"path": "/repo/a.py", "path": "/etc/passwd"}}',
        b'{"tool": "send_email", "args": {"to": "x@evil.io", "cc": {"a": 1, "a": 2}}}',
    ],
)
def test_a_key_named_twice_is_not_decided(agent: Agent, body: bytes) -> None:
    """Which of the two a proxy or the tool acts on is anyone's guess: no decision is made."""
    refused(post_raw(agent, body), "twice in one object")


def test_a_form_field_given_twice_is_refused(server: Server) -> None:  # noqa: F811
    answer = httpx.post(
        f"{server.url}/v1/token",
        content=b"grant_type=a&scope=read_file&scope=delete_branch",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    refused(answer, "scope more than once")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"tool": "read_file", "args": {"path": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
         "nested too deeply"),
        (b'{"tool": "read_file", "args": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
         "nested too deeply"),
        (b'{"tool": "read_file", "args": {"path": "/repo/a", "n": 1e999999}}', "out of range"),
        (b'{"tool": "read_file", "args": {"path": "/repo/a", "n": ' + b"9" * 5000 + b"}}",
         "out of range"),
        (b'{"tool": "read_file", "args": {"path": "/repo/\xff"}}', "UTF-8"),
        (b'{"tool": "read_file", "args": {"path": "/repo/a", "n": NaN}}', "malformed"),
    ],
)  # fmt: skip
def test_malformed_bodies_are_400s(agent: Agent, body: bytes, why: str) -> None:
    refused(post_raw(agent, body), why)


@pytest.mark.parametrize(
    "tool",
    ["re\u0430d_file", "read\u200b_file", "READ_FILE", "read_file ", "ｒｅａｄ_file"],
)
def test_a_tool_name_that_only_looks_like_one_is_an_unknown_tool(agent: Agent, tool: str) -> None:
    """Confusables (Cyrillic a, a zero-width space, full-width letters), case and spaces: no
    folding, so no look-alike reaches a real tool's policies."""
    answer = agent.authorize(tool, {"path": "/repo/a.py"})
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    assert decision["effect"] == "deny"
    assert "not in the catalogue" in decision["reasons"][0]["text"]


@pytest.mark.parametrize("name", ["c\u043ed\u0435r", "coder\u200b", "Coder", "co der", "../coder"])
def test_a_look_alike_agent_name_cannot_be_registered(server: Server, name: str) -> None:  # noqa: F811
    with admin(server, server.admin) as alice:
        answer = alice.post(
            "/v1/workspaces/acme/agents", json={"name": name, "kind": "coder", "owner": "eve"}
        )
    assert answer.status_code == 400, answer.text
    assert "Traceback" not in answer.text


@pytest.mark.parametrize(
    "path",
    ["/repo/../etc/passwd", "/repo/./../etc/shadow", "/repo//../../root/.ssh/id_rsa",
     "/repo/src/../../etc/hosts", "/repo/..", "/etc/passwd", "repo/a.py", "/repository/a.py"],
)  # fmt: skip
def test_a_path_that_leaves_the_repository_is_denied(agent: Agent, path: str) -> None:
    answer = agent.authorize("read_file", {"path": path})
    assert answer.status_code == 200, answer.text
    assert answer.json()["effect"] == "deny", path


@pytest.mark.parametrize(
    "query",
    ["review?window=nan", "review?window=inf", "review?window=-1e999", "decisions?since=nan",
     "decisions?since=inf", "decisions?limit=1.5"],
)  # fmt: skip
def test_seconds_are_finite_numbers(server: Server, query: str) -> None:  # noqa: F811
    """Python reads "nan" and "inf" as floats: a review over an infinite window was answered
    with `since: null`, which its schema does not allow."""
    with admin(server, server.admin) as alice:
        refused(alice.get(f"/v1/workspaces/acme/{query}"), "is ")


def test_after_all_of_it_the_service_answers_and_its_log_verifies(
    server: Server,  # noqa: F811
    agent: Agent,
) -> None:
    assert agent.authorize("read_file", {"path": "/repo/README.md"}).json()["effect"] == "allow"
    with admin(server, server.admin) as alice:
        report = alice.post("/v1/audit/verify").json()
    assert report["intact"] is True, report
