"""The console without a browser (on SQLite and on PostgreSQL): who may sign in and for how
long, what each role may reach, CSRF and the headers that keep pages to themselves, and the
store queries the pages stand on. tests/test_console_browser.py drives the same in Chromium."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient
from test_cli import cli_env

from tether import Guard
from tether.errors import CredentialRefused, InvalidInput, NotFound
from tether.model import ApprovalStatus, Effect
from tether.server import admin_tokens, console_auth
from tether.server.app import create_app
from tether.server.console import PAGE, _local
from tether.store import Store

PASSWORD = "correct horse battery staple"
ASK_TO_DELETE = """@id("ask-to-delete")
@approval("approver")
@reason("deleting a branch needs a person")
forbid (principal, action == Action::"delete_branch", resource) unless { context.approved };
"""


@pytest.fixture
def client(starter: Guard) -> Iterator[TestClient]:
    now = time.time()
    console_auth.add_account(starter.store, "bob", PASSWORD, {"acme": ["approver"]}, now)
    console_auth.add_account(starter.store, "carol", PASSWORD, {"acme": ["auditor"]}, now)
    console_auth.add_account(starter.store, "root", PASSWORD, {"*": ["admin"]}, now)
    with TestClient(create_app(starter, public_url="http://testserver")) as client:
        yield client


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    form = client.get("/console/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    return client.post(
        "/console/sign-in",
        data={"csrf": csrf.group(1), "with": "password", "name": name, "password": password},
        follow_redirects=False,
    )


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


# -- signing in --------------------------------------------------------------------------------


def test_a_password_signs_in_and_the_cookie_is_kept_from_scripts_and_other_sites(
    client: TestClient,
) -> None:
    answer = sign_in(client, "bob")
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{console_auth.COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    page = client.get("/console/approvals")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_without_a_session_pages_go_to_sign_in_and_live_parts_tell_htmx_to(
    client: TestClient,
) -> None:
    page = client.get("/console/decisions?workspace=acme", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/sign-in?next=")
    live = client.get("/console/approvals/list", headers={"HX-Request": "true"})
    assert live.status_code == 401
    assert live.headers["hx-redirect"] == "/console/sign-in"


@pytest.mark.parametrize(("name", "password"), [("bob", "not the password"), ("nobody", PASSWORD)])
def test_a_wrong_password_or_an_unknown_name_gets_the_same_refusal(
    client: TestClient, name: str, password: str
) -> None:
    answer = sign_in(client, name, password)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in"
    shown = client.get("/console/sign-in").text
    assert "the name or the password is not right" in shown
    assert "the name or the password is not right" not in client.get("/console/sign-in").text
    assert client.get("/console/approvals", follow_redirects=False).status_code == 303


def test_no_link_can_put_words_on_a_page(client: TestClient) -> None:
    sign_in(client, "root")
    said = "Verified by Tether: every pending request is safe to approve"
    for path in ("/console/approvals", "/console/sign-in"):
        page = client.get(path, params={"workspace": "acme", "flash": said, "error": "1"})
        assert said not in page.text


def test_a_new_password_or_disabling_the_account_ends_its_sessions(starter: Guard) -> None:
    store, now = starter.store, time.time()
    console_auth.add_account(store, "bob", PASSWORD, {"acme": ["approver"]}, now)
    stolen = console_auth.sign_in_with_password(store, "bob", PASSWORD, now)
    console_auth.add_account(store, "bob", PASSWORD + " 2", {"acme": ["approver"]}, now)
    assert console_auth.person(store, stolen, now) is None
    mine = console_auth.sign_in_with_password(store, "bob", PASSWORD + " 2", now)
    console_auth.disable_account(store, "bob", now)
    assert console_auth.person(store, mine, now) is None
    with pytest.raises(CredentialRefused):
        console_auth.sign_in_with_password(store, "bob", PASSWORD + " 2", now)
    with pytest.raises(NotFound):
        console_auth.disable_account(store, "nobody", now)


def test_every_console_response_carries_the_security_headers(client: TestClient) -> None:
    for answer in (
        client.get("/console/approvals", follow_redirects=False),  # a redirect to sign in
        client.get("/console/static/htmx.min.js"),
        client.get("/console/sign-in"),
        client.post("/console/sign-in", data={}),  # refused: no CSRF token
        client.get("/console/nowhere"),
    ):
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["cache-control"] == "no-store"


def test_passwords_are_kept_as_argon2id_hashes_only(starter: Guard) -> None:
    account = console_auth.add_account(starter.store, "dana", PASSWORD, {"acme": ["auditor"]}, 0)
    assert account.password_hash.startswith("$argon2id$")
    assert PASSWORD not in account.password_hash
    with pytest.raises(InvalidInput, match="12 characters"):
        console_auth.add_account(starter.store, "dana", "short", {"acme": ["auditor"]}, 0)
    with pytest.raises(InvalidInput, match="roles"):
        console_auth.add_account(starter.store, "dana", PASSWORD, {"acme": ["owner"]}, 0)


def test_a_session_ends_when_its_admin_token_is_revoked(starter: Guard) -> None:
    store = starter.store
    token, record = admin_tokens.issue(
        store, name="bob", roles={"acme": ["approver"]}, lifetime=3600, now=time.time()
    )
    secret = console_auth.sign_in_with_token(store, token, time.time())
    person = console_auth.person(store, secret, time.time())
    assert person is not None and person.name == "bob" and person.can("acme", "approver")
    store.admin_tokens.revoke(record.id, time.time())
    assert console_auth.person(store, secret, time.time()) is None
    with pytest.raises(CredentialRefused):
        console_auth.sign_in_with_token(store, token, time.time())


def test_a_session_expires_and_signing_out_ends_it(starter: Guard) -> None:
    store = starter.store
    console_auth.add_account(store, "bob", PASSWORD, {"acme": ["approver"]}, 0)
    now = time.time()
    secret = console_auth.sign_in_with_password(store, "bob", PASSWORD, now)
    assert console_auth.person(store, secret, now + console_auth.SESSION_SECONDS - 1) is not None
    assert console_auth.person(store, secret, now + console_auth.SESSION_SECONDS) is None
    console_auth.sign_out(store, secret)
    assert console_auth.person(store, secret, now) is None


def test_signing_in_is_limited_per_address_and_per_name(client: TestClient) -> None:
    by_address = [sign_in(client, f"guess-{i}", "guess") for i in range(12)]  # a name each
    assert by_address[-1].status_code == 429
    assert all(a.status_code in (303, 429) for a in by_address)
    elsewhere = TestClient(client.app, client=("10.0.0.9", 1234))  # another address
    by_name = [sign_in(elsewhere, "bob", "guess") for _ in range(12)]  # one name
    assert by_name[-1].status_code == 429


@given(st.text(max_size=64), st.text(max_size=64))
def test_a_csrf_token_matches_only_itself(expected: str, submitted: str) -> None:
    assert console_auth.same_token(expected, submitted) == (
        bool(expected) and expected == submitted
    )
    assert not console_auth.same_token(expected, None)


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/console/",
        "//evil.example/console/x",
        "/v1/workspaces",
        "/console\\x",
        "/console/../v1/workspaces",
        "/console/%2e%2e/v1/workspaces",
    ],
)
def test_after_signing_in_only_a_console_page_is_a_place_to_go(target: str) -> None:
    assert _local(target) == ""
    assert _local("/console/agents?workspace=acme") == "/console/agents?workspace=acme"


# -- roles -------------------------------------------------------------------------------------


def test_each_role_reaches_its_pages_and_no_other_workspace(
    client: TestClient, starter: Guard
) -> None:
    starter.add_workspace("globex")
    sign_in(client, "carol")  # auditor of acme
    assert client.get("/console/decisions").status_code == 200
    assert client.get("/console/review?workspace=acme").status_code == 200
    refused = client.get("/console/decisions?workspace=globex")
    assert refused.status_code == 403
    assert "globex" not in client.get("/console/agents").text
    client.cookies.clear()
    sign_in(client, "bob")  # approver of acme: the inbox, not the log
    assert client.get("/console/approvals").status_code == 200
    assert client.get("/console/decisions").status_code == 403
    client.cookies.clear()
    sign_in(client, "root")  # admin everywhere
    assert client.get("/console/decisions?workspace=globex").status_code == 200


def test_actions_need_their_role_and_the_sessions_csrf_token(
    client: TestClient, starter: Guard
) -> None:
    sign_in(client, "carol")
    page = client.get("/console/agents/coder")
    assert 'id="suspend"' not in page.text  # no control for an auditor
    refused = client.post(
        "/console/agents/coder/suspend?workspace=acme", data={"csrf": csrf_of(page.text)}
    )
    assert refused.status_code == 403
    assert starter.store.agent("acme", "coder").status.value == "active"
    client.cookies.clear()
    sign_in(client, "root")
    page = client.get("/console/agents/coder?workspace=acme")
    assert 'id="suspend"' in page.text
    refused = client.post("/console/agents/coder/suspend?workspace=acme", data={})
    assert refused.status_code == 403
    assert "Traceback" not in refused.text
    done = client.post(
        "/console/agents/coder/suspend?workspace=acme",
        data={"csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert starter.store.agent("acme", "coder").status.value == "suspended"


def test_an_approver_sees_the_exact_call_and_anyone_else_sees_it_as_redaction_allows(
    client: TestClient, starter: Guard
) -> None:
    workspace = starter.workspace("acme")
    with starter.store.change("acme") as change:
        change.set_settings({**workspace.settings, "audit": {"redact": ["branch"]}})
    active = starter.store.bundle("acme", workspace.active_policy_version or "")
    assert active is not None
    starter.activate_policies("acme", {**active.files, "ask.cedar": ASK_TO_DELETE})
    with starter.task(
        workspace="acme", agent="coder", user="alice", request="tidy", tools=["delete_branch"]
    ) as task:
        asked = task.authorize("delete_branch", {"branch": "feature-secret"})
        assert asked.approval_id is not None
        sign_in(client, "bob")  # an approver, and a user of acme who may decide it
        exact = client.get(f"/console/approvals/{asked.approval_id}?workspace=acme").text
        assert "feature-secret" in exact
        client.cookies.clear()
        sign_in(client, "carol")
        shown = client.get(f"/console/approvals/{asked.approval_id}?workspace=acme").text
        assert "feature-secret" not in shown
        assert "[redacted]" in shown


def test_an_approver_sees_look_alike_characters_escaped_as_the_cli_shows_them(
    client: TestClient, starter: Guard
) -> None:
    """A Cyrillic "а" or a right-to-left override in an argument must not pass for what it
    imitates: the page shows the call in ASCII (`\\u` escapes) like `tether approvals show`."""
    active = starter.store.bundle("acme", starter.workspace("acme").active_policy_version or "")
    assert active is not None
    starter.activate_policies("acme", {**active.files, "ask.cedar": ASK_TO_DELETE})
    branch = "p\u0430yroll-\u202egnp.exe"
    with starter.task(
        workspace="acme", agent="coder", user="alice", request="tidy", tools=["delete_branch"]
    ) as task:
        asked = task.authorize("delete_branch", {"branch": branch})
        assert asked.approval_id is not None
        sign_in(client, "bob")
        page = client.get(f"/console/approvals/{asked.approval_id}?workspace=acme").text
    shown = re.search(r'<pre id="arguments">(.*?)</pre>', page, re.DOTALL)
    assert shown is not None and shown.group(1).isascii()
    assert "\u0430" not in page and "\u202e" not in page
    assert json.loads(html.unescape(shown.group(1))) == {"branch": branch}  # the call, as JSON


def test_bad_input_is_a_page_with_a_4xx_and_no_trace(client: TestClient) -> None:
    sign_in(client, "root")
    page = client.get("/console/policies?workspace=acme").text
    huge = client.post(
        "/console/policies?workspace=acme",
        data={"csrf": csrf_of(page), "step": "validate", "file:x.cedar": "x" * (2 << 20)},
    )
    assert huge.status_code == 413
    odd = client.post(
        "/console/agents/coder/suspend?workspace=acme",
        content=b"csrf=%ff%fe%00",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert odd.status_code == 403  # not the token: refused, not a 500
    for path, status in [
        ("/console/decisions?workspace=acme&effect=maybe", 400),
        ("/console/decisions?workspace=acme&before=x", 400),
        ("/console/decisions?workspace=acme&before=\u00b2", 400),
        ("/console/decisions?workspace=acme&before=" + "9" * 5000, 400),
        ("/console/decisions/dec_nope?workspace=acme", 404),
        ("/console/approvals/apr_nope?workspace=acme", 404),
        ("/console/agents/nobody?workspace=acme", 404),
        ("/console/policies/nope?workspace=acme", 404),
        ("/console/review?workspace=acme&days=2", 400),
    ]:
        answer = client.get(path)
        assert answer.status_code == status, path
        assert "Traceback" not in answer.text
        assert answer.headers["content-type"].startswith("text/html")


# -- what the pages read -----------------------------------------------------------------------


def test_a_candidate_with_problems_keeps_its_edits_and_the_shadow_can_be_stopped(
    client: TestClient, starter: Guard
) -> None:
    sign_in(client, "root")
    csrf = csrf_of(client.get("/console/policies?workspace=acme").text)
    edit = {"csrf": csrf, "file:mine.cedar": "permit (principal, action, resource);"}
    bad = client.post(
        "/console/policies?workspace=acme", data={**edit, "step": "test", "tests": "tests: ["}
    )
    assert bad.status_code == 200
    problems = re.search(r'<pre id="problems">(.*?)</pre>', bad.text, re.S)
    assert problems is not None and problems.group(1).startswith("tests:")
    assert "permit (principal, action, resource);" in bad.text  # the edit is still there
    shadowed = client.post("/console/policies?workspace=acme", data={**edit, "step": "shadow"})
    assert shadowed.status_code == 200
    assert starter.workspace("acme").shadow_policy_version is not None
    stopped = client.post(
        "/console/policies?workspace=acme",
        data={"csrf": csrf, "step": "stop-shadow"},
        follow_redirects=False,
    )
    assert stopped.status_code == 303
    assert starter.workspace("acme").shadow_policy_version is None


def test_the_log_is_paged_newest_first_without_gaps(starter: Guard) -> None:
    with starter.task(
        workspace="acme", agent="coder", user="alice", request="read", tools=["read_file"]
    ) as task:
        for i in range(PAGE + 7):
            task.authorize("read_file", {"path": f"/repo/{i}.py"})
        task.authorize("read_file", {"path": "/etc/passwd"})
    store = starter.store
    first = store.decision_page("acme", {}, before=None, limit=PAGE)
    second = store.decision_page("acme", {}, before=first[-1][0], limit=PAGE)
    seen = [r.id for _, r in first + second]
    everything = [r.id for r in store.decisions(workspace="acme", limit=None)]
    assert seen == everything[: len(seen)]
    assert len(set(seen)) == len(seen)
    denied = store.decision_page("acme", {"effect": "deny"}, before=None, limit=PAGE)
    assert [r.args for _, r in denied] == ['{"path":"/etc/passwd"}']


def test_older_is_offered_only_when_there_are_older_decisions(
    client: TestClient, starter: Guard
) -> None:
    with starter.task(
        workspace="acme", agent="coder", user="alice", request="read", tools=["read_file"]
    ) as task:
        for i in range(PAGE):
            task.authorize("read_file", {"path": f"/repo/{i}.py"})
    sign_in(client, "root")
    assert ">Older<" not in client.get("/console/decisions?workspace=acme").text
    with starter.task(
        workspace="acme", agent="coder", user="alice", request="read", tools=["read_file"]
    ) as task:
        task.authorize("read_file", {"path": "/repo/one-more.py"})
    page = client.get("/console/decisions?workspace=acme").text
    older = re.search(r'href="([^"]*before=[0-9]+)">Older<', page)
    assert older is not None
    rest = client.get(older.group(1).replace("&amp;", "&")).text
    assert rest.count("data-decision=") == 1


def test_counts_by_agent_tool_and_hour(starter: Guard, home: Path) -> None:
    hour = int(time.time() // 3600)
    # Another process on the store, whose clock reads the last moment of an hour; closed
    # before the test ends, or its audit log's checkpoint thread outlives the test's database.
    with (
        Guard(Store.at_home(home), clock=lambda: hour * 3600 - 0.5) as late,
        late.task(
            workspace="acme", agent="coder", user="alice", request="read", tools=["read_file"]
        ) as task,
    ):
        task.authorize("read_file", {"path": "/repo/a.py"})
        task.authorize("read_file", {"path": "/etc/shadow"})
        task.authorize("read_file", {"path": "/etc/hosts"})
    since = hour * 3600 - 3600.0
    store = starter.store
    by_agent = store.decision_counts("acme", since=since, by=("agent", "effect"))
    assert sorted(by_agent) == [("coder", "allow", 1), ("coder", "deny", 2)]
    by_tool = store.decision_counts("acme", since=since, by=("tool", "effect"))
    assert sorted(by_tool) == [("read_file", "allow", 1), ("read_file", "deny", 2)]
    hours = store.decision_counts("acme", since=since, by=("effect",), every=3600)
    assert sorted((int(h), e, n) for h, e, n in hours) == [
        (hour - 1, "allow", 1),
        (hour - 1, "deny", 2),
    ]
    assert store.decision_counts("acme", since=since, until=since + 1, by=("agent",)) == []
    with pytest.raises(ValueError, match="counted by"):
        store.decision_counts("acme", since=since, by=("args",))


def test_tether_console_add_user_makes_an_account_that_signs_in(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = subprocess.run(
        [sys.executable, "-m", "tether.cli", "--home", str(home), "init"],
        capture_output=True, text=True, timeout=60, env=cli_env(), check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    add = [sys.executable, "-m", "tether.cli", "--home", str(home), "console", "add-user"]
    added = subprocess.run(
        [*add, "erin", "--role", "auditor@acme", "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, env=cli_env(),
        check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    refused = subprocess.run(
        [*add, "erin", "--role", "auditor@acme", "--password-stdin"],
        input="short\n", capture_output=True, text=True, timeout=60, env=cli_env(), check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "12 characters" in refused.stdout + refused.stderr
    store = Store.at_home(home)
    try:
        secret = console_auth.sign_in_with_password(store, "erin", PASSWORD, time.time())
        person = console_auth.person(store, secret, time.time())
        assert person is not None and person.can("acme", "auditor")
        assert not person.can("acme", "approver")
    finally:
        store.close()


def test_revoking_a_task_asks_first_then_its_token_is_refused(
    client: TestClient, starter: Guard
) -> None:
    task = starter.task(
        workspace="acme", agent="coder", user="alice", request="read", tools=["read_file"]
    )
    assert task.authorize("read_file", {"path": "/repo/a.py"}).effect is Effect.ALLOW
    sign_in(client, "root")
    agent_page = client.get("/console/agents/coder?workspace=acme").text
    assert f'data-task="{task.id}"' in agent_page
    confirm = client.get(f"/console/tasks/{task.id}/revoke?workspace=acme")
    assert "Yes, revoke the task" in confirm.text
    assert starter.store.task(task.id).status.value == "open"  # asking changed nothing
    done = client.post(
        f"/console/tasks/{task.id}/revoke?workspace=acme",
        data={"csrf": csrf_of(confirm.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert starter.store.task(task.id).status.value == "revoked"
    assert task.authorize("read_file", {"path": "/repo/a.py"}).effect is Effect.DENY
    after = client.get("/console/agents/coder?workspace=acme").text
    assert f"Task {task.id} is revoked." in after
    assert f'data-task="{task.id}"' not in after  # no longer among the open tasks


def test_a_sub_agents_decision_shows_the_chain_of_authority(
    client: TestClient, starter: Guard
) -> None:
    planner = starter.task(
        workspace="acme", agent="planner", user="alice", request="plan", tools=["read_file"]
    )
    coder = planner.delegate("coder", tools=["read_file"])
    decision = coder.authorize("read_file", {"path": "/repo/a.py"})
    sign_in(client, "root")
    page = client.get(f"/console/decisions/{decision.decision_id}?workspace=acme").text
    chain = re.search(r'<div class="chain" id="chain">(.*?)</div>', page, re.S)
    assert chain is not None
    hops = re.findall(r'<span class="hop">([^<]+)</span>', chain.group(1))
    assert hops == ["alice", "planner", "coder"]


def test_a_candidate_is_backtested_against_the_log(client: TestClient, starter: Guard) -> None:
    with starter.task(
        workspace="acme", agent="coder", user="alice", request="test", tools=["run_tests"]
    ) as task:
        assert task.authorize("run_tests", {"target": "unit"}).effect is Effect.ALLOW
    sign_in(client, "root")
    page = client.get("/console/policies?workspace=acme").text
    files = dict(re.findall(r'name="(file:[^"]+)"[^>]*>([^<]*)</textarea>', page))
    paused = 'forbid (principal, action == Action::"run_tests", resource);'
    report = client.post(
        "/console/policies?workspace=acme",
        data={
            "csrf": csrf_of(page),
            "step": "backtest",
            "window": "1 day",
            **{name: html.unescape(text) for name, text in files.items()},
            "new_file_name": "pause.cedar",
            "new_file_text": paused,
        },
    ).text
    assert re.search(r"Replayed \d+ decisions", report)
    assert "1 would change" in report
    change = re.search(r"<tr><td><a [^>]*>[^<]*</a></td>(.*?)</tr>", report, re.S)
    assert change is not None
    cells = re.findall(r"<td>(.*?)</td>", change.group(1))
    assert cells[:4] == ["coder", "<code>run_tests</code>", "allow", "deny"], cells


def test_nothing_of_another_workspace_is_shown_or_changed_through_the_console(
    client: TestClient, starter: Guard
) -> None:
    """DESIGN.md section 6: a person of acme, even its admin, reaches nothing of globex, by
    naming acme and another workspace's ids, or by naming globex."""
    console_auth.add_account(
        starter.store, "ann", PASSWORD, {"acme": ["admin", "approver", "auditor"]}, time.time()
    )
    starter.add_workspace("globex")
    starter.register_agent("globex", "ghost", kind="coder", owner="gus@globex.com")
    starter.register_tool("globex", "delete_branch", effects=["destructive"])
    starter.activate_policies(
        "globex",
        {"ask.cedar": ASK_TO_DELETE, "all.cedar": "permit (principal, action, resource);"},
    )
    starter.add_user("globex", "gus")
    starter.grant("globex", user="gus", agent="ghost", tools=["delete_branch"])
    theirs = starter.task(
        workspace="globex", agent="ghost", user="gus", request="x", tools=["delete_branch"]
    )
    asked = theirs.authorize("delete_branch", {})
    assert asked.approval_id is not None
    sign_in(client, "ann")
    csrf = csrf_of(client.get("/console/agents?workspace=acme").text)
    for path in (
        f"/console/decisions/{asked.decision_id}?workspace=acme",
        f"/console/approvals/{asked.approval_id}?workspace=acme",
        f"/console/tasks/{theirs.id}/revoke?workspace=acme",
        "/console/agents/ghost?workspace=acme",
    ):
        assert client.get(path).status_code == 404, path
    for path, form in (
        (f"/console/approvals/{asked.approval_id}/answer?workspace=acme", {"answer": "approve"}),
        (f"/console/tasks/{theirs.id}/revoke?workspace=acme", {}),
        ("/console/agents/ghost/suspend?workspace=acme", {}),
    ):
        assert client.post(path, data={"csrf": csrf, **form}).status_code == 404, path
    for path in ("/console/decisions?workspace=globex", "/console/approvals?workspace=globex"):
        assert client.get(path).status_code == 403, path
    assert starter.approval(asked.approval_id).status is ApprovalStatus.PENDING
    assert starter.store.task(theirs.id).status.value == "open"
    assert starter.store.agent("globex", "ghost").status.value == "active"


def test_an_agent_page_shows_task_requests_only_where_the_records_keep_arguments(
    client: TestClient, starter: Guard
) -> None:
    """A task's request (the user's words) may hold a value the workspace's records cut from
    the arguments: the agent page shows it only where they keep arguments in full, in ASCII."""
    secret = "/repo/secrets/hunter2-prod.key"
    sign_in(client, "carol")  # auditor of acme
    request = f"read {secret} and summarise \u202egnp.exe"
    with starter.task(
        workspace="acme", agent="coder", user="alice", request=request, tools=["read_file"]
    ):
        page = client.get("/console/agents/coder?workspace=acme").text
        assert f"read {secret} and summarise \\u202egnp.exe" in page
        workspace = starter.workspace("acme")
        for audit in ({"redact": ["path"]}, {"arguments": "digest"}):
            with starter.store.change("acme") as change:
                change.set_settings({**workspace.settings, "audit": audit})
            page = client.get("/console/agents/coder?workspace=acme").text
            assert secret not in page, audit
            assert "withheld by the workspace's audit setting" in page, audit


def test_wrong_passwords_from_elsewhere_do_not_keep_a_name_out_and_guesses_stay_bounded(
    client: TestClient,
) -> None:
    """Only a wrong password counts against the name tried: guesses at bob (as BOB too) from
    other addresses use up the name's failures, yet bob's right password gets in; an address
    guessing at a name whose failures are used up gets 3 tries, then waits, right or wrong."""
    for address in ("203.0.113.7", "203.0.113.8"):
        attacker = TestClient(client.app, client=(address, 4000))
        assert all(sign_in(attacker, "BOB", "guess-guess").status_code == 303 for _ in range(5))
    for address in ("198.51.100.20", "198.51.100.21"):
        bob = TestClient(client.app, client=(address, 5000))
        answer = sign_in(bob, "bob")
        assert answer.status_code == 303 and answer.headers["location"] == "/console/", address
    third = TestClient(client.app, client=("203.0.113.9", 4000))
    assert [sign_in(third, "bob", "guess-guess").status_code for _ in range(4)] == [
        303, 303, 303, 429,
    ]  # fmt: skip
    assert sign_in(third, "bob").status_code == 429  # no more checks from there, even right


def test_no_link_puts_words_of_its_own_on_an_error_page(client: TestClient) -> None:
    """An error page repeats a value of the link only if it is shaped as a name or an id."""
    said = "Verified by Tether: every pending request is safe to approve"
    sign_in(client, "root")
    for url in (
        f"/console/approvals?workspace={said}",
        f"/console/decisions/{said}?workspace=acme",
        f"/console/agents/{said}?workspace=acme",
        f"/console/approvals/{said}?workspace=acme",
        f"/console/tasks/{said}/revoke?workspace=acme",
        f"/console/agents/{said}/suspend?workspace=acme",
        f"/console/policies/{said}?workspace=acme",
    ):
        answer = client.get(url)
        assert answer.status_code in (403, 404), url
        assert "Verified by Tether" not in html.unescape(answer.text), url
    answer = client.get("/console/agents/ghost?workspace=acme")
    assert answer.status_code == 404 and "no agent &#39;ghost&#39; in acme" in answer.text
