"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against
`tether serve` (its HTTP API and console) on a home with the starter workspace, while an agent
waits for a person on another thread.

With TETHER_CONSOLE_SCREENSHOTS=<folder> the tests also keep a picture of each page there
(`make screenshots` keeps them in docs/console)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from served import Served, served
from test_cli import run_cli

from tether import Guard
from tether.model import Decision, Effect
from tether.server import console_auth
from tether.store import Store
from tether.workspace import POLL_INTERVAL

pytestmark = pytest.mark.sqlite  # the browser pass runs once; the console's store queries
# run on both stores in test_console.py

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"
SHOTS = os.environ.get("TETHER_CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: apt-get install -y chromium (CI's .ci/run installs it)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()


AGENTS: list[Guard] = []  # the agents' Guards of the test that runs: closed with its service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Served]:
    home = tmp_path / "home"
    assert run_cli(home, "init").returncode == 0
    with served(home) as service:
        store, now = service.guard.store, time.time()
        console_auth.add_account(store, "bob", PASSWORD, {"acme": ["approver", "auditor"]}, now)
        console_auth.add_account(store, "alice", PASSWORD, {"acme": ["admin"]}, now)
        console_auth.add_account(store, "carol", PASSWORD, {"acme": ["auditor"]}, now)
        try:
            yield service
        finally:
            _close_agents()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def _close_agents() -> None:
    """Before the service stops: an agent's Guard left open would go on writing its audit
    checkpoints into a database its test has dropped."""
    while AGENTS:
        AGENTS.pop().close()


class Agent:
    """The coder, acting for alice on its own thread: a call that needs approval waits (the
    SDK's `wait`) until a person answers in the console. Its Guard is another process's, on
    its own connection to the service's store."""

    def __init__(self, service: Served, tools: list[str] | None = None) -> None:
        store = service.guard.store
        self.guard = Guard(Store(store.url, home=store.home), shared_tasks=True)
        AGENTS.append(self.guard)
        self.task = self.guard.task(
            workspace="acme",
            agent="coder",
            user="alice",
            request="tidy the branches",
            tools=tools or ["read_file", "delete_branch"],
        )
        self.answer: Decision | None = None
        self._thread: threading.Thread | None = None

    def delete_branch(self, branch: str) -> None:
        def run() -> None:
            self.answer = self.task.authorize("delete_branch", {"branch": branch}, wait=60)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def soon(self, tool: str, args: dict[str, Any], effect: Effect) -> Decision:
        """The call decided `effect` within a second (DESIGN.md section 6): this Guard sees
        a change the service made when it next polls the store."""
        deadline = time.monotonic() + 1.5
        while True:
            decision = self.task.authorize(tool, args)
            if decision.effect is effect or time.monotonic() > deadline:
                return decision
            time.sleep(0.05)

    def result(self) -> Decision:
        assert self._thread is not None
        self._thread.join(timeout=60)
        assert self.answer is not None, "the agent is still waiting"
        return self.answer


def sign_in(page: Any, service: Served, name: str, then: str = "/console/approvals") -> None:
    page.goto(f"{service.url}{then}")
    shot(page, "sign-in")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[value=password]")
    page.wait_for_url(re.compile(re.escape(then)))


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("answer", ["approve", "deny"])
def test_a_person_answers_a_waiting_call_in_the_inbox_and_the_agent_goes_on(
    service: Served, page: Any, answer: str
) -> None:
    sign_in(page, service, "bob")
    assert page.locator("#inbox-empty").is_visible()
    agent = Agent(service)
    agent.delete_branch("feature-old")
    row = page.locator("tr[data-approval]")  # the inbox updates by itself
    row.wait_for()
    assert "delete_branch" in row.inner_text()
    shot(page, "approvals")
    row.get_by_role("link", name="Review").click()
    assert '"branch": "feature-old"' in page.locator("#arguments").inner_text()
    shot(page, "approval")
    page.fill("#comment", f"bob says {answer}: checked with the team")
    page.click(f"button[value={answer}]")
    page.wait_for_url(re.compile(r"/console/approvals\?"))
    assert ("Approved" if answer == "approve" else "Denied") in page.inner_text(".flash")
    decision = agent.result()
    if answer == "approve":
        assert decision.effect is Effect.ALLOW
    else:
        assert decision.effect is Effect.DENY
        assert "checked with the team" in decision.reason
    assert page.locator("#inbox-empty").is_visible()


def test_suspending_an_agent_in_the_console_denies_its_next_call(
    service: Served, page: Any
) -> None:
    agent = Agent(service)
    assert agent.task.authorize("read_file", {"path": "/repo/README.md"}).effect is Effect.ALLOW
    sign_in(page, service, "alice", then="/console/agents")
    shot(page, "agents")
    page.get_by_role("link", name="coder").click()
    shot(page, "agent")
    page.click("#suspend")
    assert "Every call coder makes is denied" in page.inner_text("main")
    shot(page, "confirm")
    page.get_by_role("button", name="Yes, suspend coder").click()
    page.wait_for_url(re.compile(r"/console/agents/coder\?"))
    assert page.inner_text("#agent-status") == "suspended"
    decision = agent.soon("read_file", {"path": "/repo/README.md"}, Effect.DENY)
    assert decision.effect is Effect.DENY
    assert "suspended" in decision.reason


def test_without_the_approver_role_there_is_no_control_and_the_endpoint_refuses(
    service: Served, page: Any
) -> None:
    agent = Agent(service)
    agent.delete_branch("feature-carol")
    sign_in(page, service, "carol")
    page.locator("tr[data-approval]").get_by_role("link", name="Review").click()
    assert page.locator("button[value=approve]").count() == 0
    assert "approver role" in page.inner_text("#cannot-decide")
    approval_id = page.url.split("/approvals/")[1].split("?")[0]
    csrf = _csrf(page, service)
    refused = page.request.post(
        f"{service.url}/console/approvals/{approval_id}/answer?workspace=acme",
        form={"csrf": csrf, "answer": "approve", "comment": "let me"},
    )
    assert refused.status == 403
    assert service.guard.approval(approval_id).status.value == "pending"
    service.guard.deny(approval_id, approver="bob", comment="cleaning up")
    agent.result()


def test_forms_refuse_a_missing_or_wrong_csrf_token(service: Served, page: Any) -> None:
    page.goto(f"{service.url}/console/sign-in")
    refused = page.request.post(
        f"{service.url}/console/sign-in",
        form={"with": "password", "name": "alice", "password": PASSWORD},
    )
    assert refused.status == 403
    sign_in(page, service, "alice", then="/console/agents")
    for form in ({}, {"csrf": "not-the-token"}):
        refused = page.request.post(
            f"{service.url}/console/agents/coder/suspend?workspace=acme", form=form
        )
        assert refused.status == 403
        assert "CSRF" in refused.text()
    assert service.guard.store.agent("acme", "coder").status.value == "active"
    accepted = page.request.post(
        f"{service.url}/console/agents/coder/suspend?workspace=acme",
        form={"csrf": _csrf(page, service)},
    )
    assert accepted.ok  # the same request with the session's token is done
    assert service.guard.store.agent("acme", "coder").status.value == "suspended"


def test_decisions_feed_and_a_decision_explained(service: Served, page: Any) -> None:
    agent = Agent(service)
    allowed = agent.task.authorize("read_file", {"path": "/repo/a.py"})
    denied = agent.task.authorize("read_file", {"path": "/etc/passwd"})
    sign_in(page, service, "bob", then="/console/decisions")
    shot(page, "decisions")
    page.select_option("#f-effect", "deny")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"effect=deny"))
    rows = page.locator("tr[data-decision]")
    shown = [row.get_attribute("data-decision") for row in rows.all()]
    assert denied.decision_id in shown
    assert allowed.decision_id not in shown  # the filter took the allowed one out
    assert all(e == "deny" for e in page.locator("tr[data-decision] .effect").all_inner_texts())
    page.locator(f"tr[data-decision='{denied.decision_id}'] a").click()
    assert page.inner_text("#chain").replace("\n", "") == "alice→coder"
    assert "/etc/passwd" in page.inner_text("main")
    shot(page, "decision")


NO_TESTS = """@id("no-test-runs")
@reason("test runs are paused")
forbid (principal, action == Action::"run_tests", resource);
"""
NO_TESTS_CASE = """tests:
  - {name: tests are paused, agent: coder, tool: run_tests, args: {target: unit}, expect: deny}
"""


def test_a_candidate_goes_from_validation_through_the_shadow_to_active(
    service: Served, page: Any
) -> None:
    agent = Agent(service, tools=["run_tests"])
    sign_in(page, service, "alice", then="/console/policies")
    before = page.inner_text("#active-version")
    page.fill("#new-name", "pause.cedar")
    page.fill("#new-text", NO_TESTS)
    page.click("button[value=validate]")
    assert "Valid: " in page.inner_text("#outcome")
    page.fill("#tests", NO_TESTS_CASE)
    page.click("button[value=test]")
    assert "1 of 1 cases pass" in page.inner_text("#outcome")
    page.click("button[value=shadow]")
    page.locator(".flash").wait_for()  # the page the action led to says what it did
    assert page.inner_text("#shadow-version") != "none"
    assert page.inner_text("#active-version") == before
    # Enforced: still allowed; the shadow would have denied it, and the page says so once
    # the agent's Guard, polling the store, evaluates the shadow too.
    deadline = time.monotonic() + 10
    while "run_tests" not in page.inner_text("#disagreements"):
        assert time.monotonic() < deadline, "no disagreement shown"
        assert agent.task.authorize("run_tests", {"target": "unit"}).effect is Effect.ALLOW
        time.sleep(POLL_INTERVAL)
        page.reload()
    shot(page, "policies")
    page.click("button[value=activate]")  # the candidate shown is the shadow's
    page.locator(".flash").wait_for()  # the page the action led to says what it did
    assert page.inner_text("#active-version") not in (before, "none")
    decision = agent.soon("run_tests", {"target": "unit"}, Effect.DENY)
    assert decision.effect is Effect.DENY
    assert "test runs are paused" in decision.reason
    page.get_by_role("link", name="changes").first.click()
    assert '+forbid (principal, action == Action::"run_tests", resource);' in page.inner_text(
        "pre.diff"
    )
    shot(page, "policy-diff")


def test_the_access_review_page(service: Served, page: Any) -> None:
    Agent(service).task.authorize("read_file", {"path": "/repo/a.py"})
    sign_in(page, service, "carol", then="/console/review")
    rows = [row.locator("td").all_inner_texts() for row in page.locator("tbody tr").all()]
    coder = next(cells for cells in rows if cells and cells[0] == "coder")
    assert coder[0] == "coder" and coder[5] == "read_file" and coder[7] == "1", coder
    assert "write_file" in coder[6]  # granted, never used: what the review is for
    assert "coder may hold" in page.inner_text("#findings")
    shot(page, "review")


def _csrf(page: Any, service: Served) -> str:
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    return str(token)
