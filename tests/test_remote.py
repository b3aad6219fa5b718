"""What only a Guard over HTTP has to get right: the same methods as the embedded Guard, an
agent's key that never leaves its process, token renewal and delegation through the token
endpoint, downstream tokens, waiting for a person by long poll, errors raised as the classes the
embedded Guard raises, and what the network changes (documented in tether/sdk/remote.py).

How the Guard decides is tested in both modes by test_guard.py and test_chains.py; these tests
speak to `tether serve` run in this process (tests/served.py)."""

from __future__ import annotations

import inspect
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from conftest import STARTER, Clock, acme
from served import Served, served

from tether import Guard, TaskHandle
from tether.credentials.verifier import TokenVerifier
from tether.errors import (
    Conflict,
    CredentialRefused,
    Forbidden,
    InvalidInput,
    NotFound,
    PolicyError,
    Unavailable,
)
from tether.identity import generate_key, public_jwk
from tether.model import ApprovalStatus, Decision, Effect, KeyStatus, TaskStatus
from tether.sdk import remote
from tether.sdk.remote import RemoteGuard, RemoteTaskHandle


@pytest.fixture
def service(home: Path) -> Iterator[Served]:
    """`tether serve` on conftest's `acme`, with a `helper` alice's coder may hand work to."""
    with served(home) as service, admin(service) as alice:
        acme(alice)
        alice.register_agent("acme", "helper", kind="coder", owner="alice@acme.com")
        yield service


def admin(service: Served, token: str | None = None) -> RemoteGuard:
    return Guard.remote(service.url, admin_token=token or service.admin_token)


def start(guard: RemoteGuard, **spec: object) -> RemoteTaskHandle:
    defaults: dict[str, object] = {
        "workspace": "acme",
        "agent": "coder",
        "user": "alice",
        "request": "tidy up",
        "tools": ["read_file", "send_email"],
    }
    return guard.task(**{**defaults, **spec})  # type: ignore[arg-type]


# -- the same methods ------------------------------------------------------------------------------

# Methods only an embedded Guard has: how each kind is made, and what only the service itself
# calls (an agent's token exchange, a decision on its event loop). (Its store and components
# are attributes, not methods.)
# In-process only: the service's own token exchange and event-loop decisions, and what the MCP
# gateway (a process on the store) uses: reports from the Decision it holds, and catalogue
# entries registered as Tool records in one change.
EMBEDDED_ONLY = {
    "embedded",
    "remote",
    "exchange",
    "authorize_async",
    "report_decided",
    "register_tools",
}


def _methods(cls: type) -> dict[str, list[tuple[str, object, object]]]:
    return {
        name: [
            (p.name, p.kind, p.default)
            for p in inspect.signature(member).parameters.values()
            if p.name != "self"
        ]
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def test_a_remote_guard_has_every_method_of_the_embedded_one() -> None:
    embedded, remote = _methods(Guard), _methods(RemoteGuard)
    assert set(embedded) - EMBEDDED_ONLY == set(remote)
    for name in remote:
        assert remote[name] == embedded[name], name
    handles = (TaskHandle, RemoteTaskHandle)
    assert _methods(handles[0]) == _methods(handles[1])
    public = [{n for n in dir(h) if not n.startswith("_")} for h in handles]
    assert public[0] == public[1]


# -- an agent's key ---------------------------------------------------------------------------------


def test_an_agent_with_only_its_key_works_and_its_key_never_leaves_it(service: Served) -> None:
    key = generate_key()
    registered = httpx.post(
        f"{service.url}/v1/workspaces/acme/agents/coder/keys",
        json={"jwk": public_jwk(key)},
        headers={"Authorization": f"Bearer {service.admin_token}"},
    )
    assert registered.status_code == 201, registered.text
    with Guard.remote(service.url, agent="coder", key=key) as agent:
        with start(agent) as task:
            allowed = task.authorize("read_file", {"path": "/repo/a"})
            assert allowed.allowed and task.claims.jkt == key.thumbprint()
            task.report(allowed, "# readme")
            assert task.state.executed == 1 and task.state.task.request == "tidy up"
        with pytest.raises(Forbidden, match="no admin token"):
            agent.add_user("acme", "mallory")
        with pytest.raises(InvalidInput, match="no key for agent 'helper'"):
            start(agent, agent="helper")
    stored = service.guard.store.credentials.agent_keys("acme", "coder")
    assert [k.kid for k in stored] == [key.thumbprint()]
    assert all("d" not in k.jwk for k in stored)


def test_keys_a_remote_guard_made_are_revoked_when_it_closes(service: Served) -> None:
    with admin(service) as alice, start(alice) as task:
        assert task.authorize("read_file", {"path": "/x"}).allowed
    keys = service.guard.store.credentials.agent_keys("acme", "coder")
    assert len(keys) == 1 and keys[0].status is KeyStatus.REVOKED


# -- tokens: renewal, delegation, downstream ------------------------------------------------------


def test_a_task_outlives_its_tokens_and_hands_part_of_it_to_a_sub_agent(
    home: Path, clock: Clock
) -> None:
    with (
        served(home, clock=clock) as service,
        Guard.remote(service.url, admin_token=service.admin_token, clock=clock) as alice,
    ):
        acme(alice)
        alice.register_agent("acme", "helper", kind="coder", owner="alice@acme.com")
        chain = alice.grant(
            "acme", user="alice", agent="coder", tools=["read_file"], may_act=["helper"]
        )
        with start(alice, tools=["read_file"], grant=chain.id) as task:
            # The sub-task carries the user's request; the delegating agent cannot write one.
            with pytest.raises(CredentialRefused, match="cannot write another"):
                task.delegate("helper", request="read the notes")
            sub = task.delegate("helper")
            assert sub.claims.agent == "helper" and sub.claims.tasks == (task.id,)
            first = (task.claims.jti, sub.claims.jti)
            clock.now += 250  # past four fifths of a five-minute token
            assert task.authorize("read_file", {"path": "/notes"}).allowed
            assert sub.authorize("read_file", {"path": "/notes"}).allowed
            assert (task.claims.jti, sub.claims.jti) != first  # both renewed over HTTP
            assert (task.claims.task, sub.claims.task) == (task.id, sub.id)
            assert sub.state.task.request == "tidy up" and sub.state.calls == 1
        after = sub.authorize("read_file", {"path": "/notes"})
        assert after.effect is Effect.DENY and f"task {task.id} was ended" in after.reason


def test_a_downstream_token_is_for_one_allowed_call(service: Served) -> None:
    verifier = TokenVerifier(
        jwks=lambda: httpx.get(f"{service.url}/.well-known/jwks.json").json(),
        issuer="tether",
        audience="https://files.example",
    )
    with admin(service) as alice, start(alice) as task:
        allowed = task.authorize("read_file", {"path": "/repo/a"})
        token = task.downstream_token(allowed, "https://files.example")
        claims = verifier.verify(token)
        assert claims["scope"] == "read_file" and claims["decision"] == allowed.decision_id
        with pytest.raises(CredentialRefused, match="already issued"):
            task.downstream_token(allowed, "https://files.example")
        refused = task.authorize("send_email", {"to": "eve@evil.io"})
        with pytest.raises(InvalidInput, match="not an allowed call"):
            task.downstream_token(refused, "https://files.example")


# -- waiting for a person ---------------------------------------------------------------------------


def test_an_agent_waits_for_a_person_by_long_poll(service: Served) -> None:
    bob_token = service.token("bob", {"acme": ["approver"]})
    with admin(service) as alice, admin(service, bob_token) as bob:
        alice.add_user("acme", "bob", roles=["admin"])  # the policy asks an admin's yes
        with start(alice) as task, start(alice) as other:
            asked = task.authorize("send_email", {"to": "ceo@acme.com"})
            assert asked.effect is Effect.APPROVAL_REQUIRED and asked.approval_id
            with pytest.raises(Forbidden, match="answers as bob, not as carol"):
                bob.approve(asked.approval_id, approver="carol")
            # Another task of the same agent cannot read it.
            path = f"/v1/tasks/{other.id}/approvals/{asked.approval_id}"
            peek = httpx.get(
                service.url + path,
                headers={
                    "Authorization": f"DPoP {other.token}",
                    "DPoP": other.proof("GET", service.url + path, other.token),
                },
            )
            assert peek.status_code == 404
            answer = threading.Timer(
                0.5, bob.approve, args=(asked.approval_id,), kwargs={"approver": "bob"}
            )
            answer.start()
            waited = time.monotonic()
            allowed = task.wait(asked, timeout=20)
            answer.join()
            assert allowed.allowed and allowed.approval_id == asked.approval_id
            assert time.monotonic() - waited < 10  # answered by the poll, not at the timeout
            again = task.authorize("send_email", {"to": "ceo@acme.com"}, wait=0.3)
            assert again.effect is Effect.APPROVAL_REQUIRED  # nobody answered this one
            bob.deny(again.approval_id or "", approver="bob")
            assert task.wait(again, timeout=5).effect is Effect.DENY
    request = service.guard.approvals.get(asked.approval_id)
    assert request.status is ApprovalStatus.USED and request.decided_by == "bob"


# -- administration ---------------------------------------------------------------------------------


def test_a_folder_is_applied_and_policies_backtested_over_http(home: Path) -> None:
    with served(home) as service, admin(service) as alice:
        assert alice.apply_directory(STARTER) == "acme"
        assert {"read_file", "delete_branch"} <= {t.name for t in alice.tools("acme")}
        with start(alice, agent="planner", tools=["read_file"]) as task:
            allowed = task.authorize("read_file", {"path": "/repo/a"})
            assert allowed.allowed
        candidate = alice.check_policies(
            "acme", {"none.cedar": "forbid (principal, action, resource);"}
        )
        report = alice.backtest("acme", candidate, since=0)
        assert report == service.guard.backtest("acme", candidate, since=0)
        (change,) = [c for c in report.changes if c.decision_id == allowed.decision_id]
        assert (change.before, change.after) == (Effect.ALLOW, Effect.DENY)
        version = alice.activate_policies("acme", candidate.files, shadow=True)
        assert alice.workspace("acme").shadow_policy_version == version
        alice.stop_shadow("acme")
        assert alice.workspace("acme").shadow_policy_version is None


def test_revoking_a_task_or_a_grant_over_http(service: Served) -> None:
    with admin(service) as alice:
        with start(alice) as task:
            assert task.state.status is TaskStatus.OPEN
            alice.revoke_task(task.id)
            refused = task.authorize("read_file", {"path": "/x"})
            assert refused.effect is Effect.DENY and "revoked" in refused.reason
        assert task.state.status is TaskStatus.REVOKED  # its end found it closed already
        grant = alice.grant("acme", user="alice", agent="coder", tools=["read_file"])
        alice.revoke_grant(grant.id)
        with pytest.raises(CredentialRefused, match="revoked"):
            start(alice, tools=["read_file"], grant=grant.id)


def test_errors_are_raised_as_the_embedded_guard_raises_them(service: Served) -> None:
    with admin(service) as alice:
        with pytest.raises(PolicyError) as broken:
            alice.activate_policies(
                "acme", {"bad.cedar": 'permit (principal, action == Action::"nope", resource);'}
            )
        assert broken.value.problems and broken.value.problems[0].file == "bad.cedar"
        with pytest.raises(Conflict, match="already exists"):
            alice.add_workspace("acme")
        with pytest.raises(NotFound, match="apr_nothing"):
            alice.approve("apr_nothing", approver="alice")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with Guard.remote(nobody, admin_token="x", timeout=2) as lost, pytest.raises(Unavailable):
        lost.workspace("acme")


# -- what the network changes -----------------------------------------------------------------------


def test_an_output_too_large_for_one_report_labels_the_task_unscanned(service: Served) -> None:
    with admin(service) as alice, start(alice) as task:
        read = task.authorize("read_file", {"path": "/big"})
        task.report(read, "harmless " * 400_000 + "AKIAIOSFODNN7EXAMPLE")  # 3.6 MB
        assert "unscanned" in task.state.labels  # the rest was not sent: unknown, not clean
        small = task.authorize("read_file", {"path": "/small"})
        task.report(small, {"key": "AKIAIOSFODNN7EXAMPLE"})
        assert "secret" in task.state.labels
        recorded = service.guard.decisions("acme", task_id=task.id, limit=1)[0]
        assert json.loads(recorded.args) == {"path": "/small"}


# An allow, as a service (or whatever sits between it and the agent) sends it.
ALLOWED = {
    "decision_id": "dec_1",
    "effect": "allow",
    "reasons": [],
    "policy_version": "v1",
    "workspace": "acme",
    "agent": "coder",
    "task_id": "task_mine",
    "tool": "send_email",
}


@pytest.mark.parametrize(
    "wrong",
    [{"tool": "read_file"}, {"task_id": "task_other"}, {"decision_id": ""}],
    ids=["another tool", "another task", "no record"],
)
def test_an_answer_for_another_call_is_a_deny(wrong: dict[str, str]) -> None:
    """A misrouted replica or a caching proxy can answer with another call's allow: it must
    not run this call (no service here: the answers are made up, as such a proxy would)."""
    sent = {"body": ALLOWED}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=sent["body"])

    with RemoteGuard("http://tether.invalid") as guard:
        guard._http = httpx.Client(base_url=guard.url, transport=httpx.MockTransport(answer))

        def ask() -> object:
            return guard.authorize("task_mine", "send_email", {"to": "x"}, token="t", proof="p")

        assert ask() == msgspec.convert(ALLOWED, Decision)  # this call's answer stands
        sent["body"] = {**ALLOWED, **wrong}
        decision = ask()
    assert isinstance(decision, Decision)
    assert (decision.effect, decision.tool, decision.task_id) == (
        Effect.DENY,
        "send_email",
        "task_mine",
    )
    assert "does not answer this call" in decision.reasons[0].text


def test_a_report_filled_to_the_byte_sends_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """A piece that takes exactly the room left used to leave it at -1, and the next piece
    was then sent nearly whole (`found[:-1]`): a report over the service's size limit."""
    monkeypatch.setattr(remote, "REPORT_BYTES", 10)
    pieces, unread = remote._text(["a" * 8, "b" * 50])  # '"aaaaaaaa"' is 10 bytes
    assert pieces == ["a" * 8] and unread
    assert sum(len(json.dumps(p)) for p in pieces) <= 10
