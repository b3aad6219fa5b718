"""The web console, served by `tether serve` at /console (templates: tether/console).

Every page is for a person signed in (console_auth.py) and about one workspace where they hold
a role. What they may do follows the HTTP API's roles: an `approver` decides approvals, an
`admin` suspends agents and revokes tasks, an `auditor` reads decisions and the review, a
`policy-author` works on policies (`admin` may do everything). One reading is wider than the
API's: an auditor also sees the approvals inbox, read-only, with the arguments and reasons as
the workspace's records keep them (an approver sees the exact call). A control a person may
not use is not shown, and its endpoint refuses them all the same: the page is a convenience,
the check is here.

Every POST carries the session's CSRF token, and one that changes something ends in a redirect
(so a reload never repeats it). Whatever goes wrong is a page with a 4xx and what to do, never a
stack trace.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.audit.redaction import FULL, Redaction
from tether.audit.review import review
from tether.console import STATIC, environment, render
from tether.errors import CredentialRefused, Forbidden, InvalidInput, NotFound, TetherError
from tether.model import ApprovalRequest, ApprovalStatus, Effect, Reason, Stage
from tether.names import SEGMENT_PATTERN
from tether.sdk import Guard
from tether.server import console_auth
from tether.server import console_policies as policies
from tether.server.console_auth import Person
from tether.server.limits import RateLimits

log = logging.getLogger("tether.console")

PAGE = 50  # decisions a page
FLASH = "tether_console_flash"  # what an action said, for the page it leads to
MAX_FORM = 1 << 20  # bytes: a policy candidate's files fit many times over
CHART_HOURS = 24
TOP_DENIED = 8
TASKS_SHOWN = 100  # an agent's open tasks on its page, the newest
REVIEW_DAYS = ("1", "7", "30", "90")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
Handler = Callable[[Request, Person, str], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


class Console:
    def __init__(self, guard: Guard, *, base: str, secure: bool) -> None:
        self.guard = guard
        self.base = base  # the console's path: /console
        self.secure = secure  # served over HTTPS: cookies are Secure
        self.env = environment()
        # Attempts: 10 at once, then one each 5 s, per address; wrong passwords the same per
        # name tried. Past a name's, each address may still try it 3 times, then once a minute.
        self.sign_ins = RateLimits(rate=0.2, burst=10.0)
        self.failures = RateLimits(rate=0.2, burst=10.0)
        self.guessed = RateLimits(rate=1 / 60, burst=3.0)

    # -- rendering and the person ------------------------------------------------------------

    def page(self, template: str, code: int = 200, **values: Any) -> HTMLResponse:
        return HTMLResponse(render(self.env, template, base=self.base, **values), code)

    def context(
        self, request: Request, person: Person, workspace: str, page: str
    ) -> dict[str, Any]:
        return {
            "person": person,
            "workspace": workspace,
            "workspaces": request.state.workspaces,  # theirs, as _admit found them
            "page": page,
            **_flash(request),
        }

    def error(
        self, status: int, message: str, person: Person | None = None, workspace: str = ""
    ) -> HTMLResponse:
        """A page saying what went wrong (the person and workspace: for its header)."""
        heading = {403: "Not allowed", 404: "Not found", 401: "Sign in again"}.get(
            status, "That did not work"
        )
        return self.page(
            "error.html",
            status,
            status=status,
            heading=heading,
            message=message,
            person=person,
            workspace=workspace,
        )

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """The framework's refusals (no such page, wrong method) as console pages."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return self.error(status, "There is no such page here." if status == 404 else str(exc))

    def _person(self, request: Request) -> Person | None:
        return console_auth.person(
            self.guard.store, request.cookies.get(console_auth.COOKIE), time.time()
        )

    def view(self, *roles: str, post: bool = False) -> Callable[[Handler], Endpoint]:
        """A page or action for someone signed in holding one of `roles` in the workspace the
        request names (by default the first they hold a role in); an action also needs the
        session's CSRF token."""

        def wrap(handler: Handler) -> Endpoint:
            async def endpoint(request: Request) -> Response:
                form = await _form(request) if post else {}
                if form is None:
                    return self.error(413, f"A form is at most {MAX_FORM} bytes.")
                return await run_in_threadpool(self._run, handler, request, form, roles, post)

            return endpoint

        return wrap

    def _run(
        self,
        handler: Handler,
        request: Request,
        form: dict[str, Any],
        roles: tuple[str, ...],
        post: bool,
    ) -> Response:
        try:
            admitted = self._admit(request, form, roles, post)
            if isinstance(admitted, Response):
                return admitted
            person, workspace = admitted
            request.state.form = form
            response = handler(request, person, workspace)
            if FLASH in request.cookies:  # said once, on the page it was for
                response.delete_cookie(FLASH, path=self.base)
            return response
        except Forbidden as exc:
            return self.error(403, _own(request, str(exc), "This is not allowed here."))
        except NotFound as exc:
            return self.error(404, _own(request, str(exc), "There is no such thing here."))
        except TetherError as exc:  # bad input, and whatever else Tether refused with a reason
            return self.error(400, _own(request, str(exc), "That request is not valid here."))
        except Exception:
            log.exception("console %s %s", request.method, request.url.path)
            return self.error(500, "Something went wrong on our side; it has been logged.")

    def _admit(
        self, request: Request, form: dict[str, Any], roles: tuple[str, ...], post: bool
    ) -> tuple[Person, str] | Response:
        """The person and the workspace, or the answer for someone who may not go on."""
        person = self._person(request)
        if person is None:
            if "hx-request" in request.headers:  # a live part of a page: htmx goes to sign in
                return Response(status_code=401, headers={"hx-redirect": f"{self.base}/sign-in"})
            if post:
                return self.error(401, "Your session has ended: sign in again.")
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{self.base}/sign-in?next={quote(here)}", 303)
        if post and not console_auth.same_token(person.csrf, _text(form.get("csrf"))):
            return self.error(
                403,
                "This form's CSRF token is missing or wrong, so nothing was done. Reload the "
                "page and try again.",
                person,
            )
        mine = person.workspaces([w.name for w in self.guard.store.workspaces()])
        workspace = request.query_params.get("workspace") or (mine[0] if mine else "")
        if workspace not in mine or not person.can(workspace, *roles):
            shown = workspace if workspace in mine else ""
            needed = " or ".join(roles)
            named = _shaped(workspace) or not workspace  # no words of a link's own
            where = f"workspace {workspace or '(none)'}" if named else "that workspace"
            return self.error(403, f"This needs the {needed} role in {where}.", person, shown)
        request.state.workspaces = mine
        return person, workspace

    def done(self, path: str, workspace: str, flash: str, *, error: bool = False) -> Response:
        """After an action: back to a page, which says what happened. The words go in a
        cookie, not the URL, so that no link can put words of its own on a page."""
        sep = "&" if "?" in path else "?"
        return self._flashed(f"{self.base}{path}{sep}workspace={quote(workspace)}", flash, error)

    def _flashed(self, url: str, flash: str, error: bool) -> Response:
        response = RedirectResponse(url, 303)
        self._cookie(response, FLASH, ("!" if error else "") + quote(flash[:500]), 60)
        return response

    # -- signing in and out ------------------------------------------------------------------

    async def sign_in_page(self, request: Request) -> Response:
        token = request.cookies.get(console_auth.SIGN_IN_COOKIE) or console_auth.new_token()
        response = self.page(
            "sign_in.html",
            person=None,
            csrf=token,
            next=_local(request.query_params.get("next", "")),
            **_flash(request),
        )
        self._cookie(response, console_auth.SIGN_IN_COOKIE, token, 3600)
        response.delete_cookie(FLASH, path=self.base)
        return response

    async def sign_in(self, request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return self.error(413, f"A form is at most {MAX_FORM} bytes.")
        expected = request.cookies.get(console_auth.SIGN_IN_COOKIE, "")
        if not console_auth.same_token(expected, _text(form.get("csrf"))):
            return self.error(
                403, "This form's CSRF token is missing or wrong. Reload the page and try again."
            )
        address = request.client.host if request.client else "?"
        name = _text(form.get("name")).casefold() if form.get("with") != "token" else ""
        pair = f"{name}@{address}"
        if self.sign_ins.take(f"address/{address}", 1) is not None or (
            name and not self.failures.has(name) and not self.guessed.has(pair)
        ):
            return self.error(429, "Too many attempts to sign in; wait a minute.")
        store, now = self.guard.store, time.time()
        try:
            if form.get("with") == "token":
                secret = await run_in_threadpool(
                    console_auth.sign_in_with_token, store, _text(form.get("token")), now
                )
            else:
                secret = await run_in_threadpool(
                    console_auth.sign_in_with_password,
                    store,
                    _text(form.get("name")),
                    _text(form.get("password")),
                    now,
                )
        except CredentialRefused as exc:
            if name:  # only a wrong password counts against the name: the right one is let in
                self.failures.take(name, 1)
                self.guessed.take(pair, 1)
            again = _local(_text(form.get("next")))
            target = f"{self.base}/sign-in" + (f"?next={quote(again)}" if again else "")
            return self._flashed(target, str(exc), True)
        response = RedirectResponse(_local(_text(form.get("next"))) or f"{self.base}/", 303)
        self._cookie(response, console_auth.COOKIE, secret, int(console_auth.SESSION_SECONDS))
        response.delete_cookie(console_auth.SIGN_IN_COOKIE, path=self.base)
        return response

    async def sign_out(self, request: Request) -> Response:
        form = await _form(request) or {}
        secret = request.cookies.get(console_auth.COOKIE)
        person = self._person(request)
        if person is not None and not console_auth.same_token(person.csrf, _text(form.get("csrf"))):
            return self.error(403, "This form's CSRF token is missing or wrong.", person)
        console_auth.sign_out(self.guard.store, secret)
        response = RedirectResponse(f"{self.base}/sign-in", 303)
        response.delete_cookie(console_auth.COOKIE, path=self.base)
        return response

    def _cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.base,
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    async def home(self, request: Request) -> Response:
        return RedirectResponse(f"{self.base}/approvals", 303)

    # -- approvals ---------------------------------------------------------------------------

    def approvals(self, request: Request, person: Person, workspace: str) -> Response:
        return self.page(
            "approvals.html",
            **self._inbox(person, workspace),
            **self.context(request, person, workspace, "approvals"),
        )

    def approvals_list(self, request: Request, person: Person, workspace: str) -> Response:
        return self.page(
            "approvals_list.html", workspace=workspace, **self._inbox(person, workspace)
        )

    def _inbox(self, person: Person, workspace: str) -> dict[str, Any]:
        """The waiting requests, with their reasons as whoever looks may see them."""
        pending = self.guard.approvals.pending(workspace)
        if person.can(workspace, "approver"):
            return {"pending": pending, "reasons": {a.id: a.reasons for a in pending}}
        redaction = self._redaction(workspace)
        reasons = {a.id: _as_kept(redaction, a)[1] for a in pending}
        return {"pending": pending, "reasons": reasons}

    def _redaction(self, workspace: str) -> Redaction:
        return Redaction.from_settings(self.guard.workspace(workspace).settings)

    def approval(self, request: Request, person: Person, workspace: str) -> Response:
        approval = self._approval(request, workspace)
        record = self.guard.store.decision(approval.decision_id)
        context = json.loads(record.context) if record is not None and record.context else {}
        why_not = self._why_not(person, approval, workspace)
        # Who may decide it sees the exact call; anyone else, what the records keep of it.
        shown = (approval.args, approval.reasons) if why_not is None else None
        arguments, reasons = shown or _as_kept(self._redaction(workspace), approval)
        return self.page(
            "approval.html",
            approval=approval,
            arguments=arguments,
            reasons=reasons,
            provenance=context.get("provenance") or {},
            can_decide=why_not is None,
            why_not=why_not,
            **self.context(request, person, workspace, "approvals"),
        )

    def answer(self, request: Request, person: Person, workspace: str) -> Response:
        approval = self._approval(request, workspace)
        why_not = self._why_not(person, approval, workspace)
        if why_not is not None:
            raise Forbidden(f"you cannot decide this request: {why_not}")
        form = request.state.form
        comment = _text(form.get("comment"))[:2000]
        if form.get("answer") == "approve":
            self.guard.approve(approval.id, approver=person.name, comment=comment)
            said = f"Approved: {approval.agent} may now make this call of {approval.tool}."
        elif form.get("answer") == "deny":
            self.guard.deny(approval.id, approver=person.name, comment=comment)
            said = f"Denied: {approval.agent}'s call of {approval.tool} will not be made."
        else:
            raise InvalidInput("answer approve or deny")
        return self.done("/approvals", workspace, said)

    def _approval(self, request: Request, workspace: str) -> ApprovalRequest:
        approval_id = request.path_params["approval_id"]
        stored = self.guard.store.approvals.get(approval_id)
        if stored is None or stored.workspace != workspace:  # another's: as if it were not
            raise NotFound(f"no approval request {_quoted(approval_id, 'with that id')}")
        return self.guard.approvals.get(approval_id)  # expired now if its time has passed

    def _why_not(self, person: Person, approval: ApprovalRequest, workspace: str) -> str | None:
        """Why this person may not decide the request: the console's role, then the
        workspace's own rules for approvers (their user roles, no self-approval)."""
        if not person.can(workspace, "approver"):
            return f"deciding approvals needs the approver role in {workspace}"
        if approval.status is not ApprovalStatus.PENDING:
            return "it has been decided already"
        return self.guard.approvals.why_not(approval.id, person.name)

    # -- agents and tasks --------------------------------------------------------------------

    def agents(self, request: Request, person: Person, workspace: str) -> Response:
        store = self.guard.store
        since = time.time() - 86400
        counts: dict[str, dict[str, int]] = {}
        for agent, effect, n in store.decision_counts(
            workspace, since=since, by=("agent", "effect")
        ):
            counts.setdefault(agent or "", {})[effect] = n
        rows = []
        for agent in store.agents(workspace):
            seen = counts.get(agent.name, {})
            calls = sum(seen.values())
            refused = seen.get(Effect.DENY.value, 0)
            rows.append(
                {
                    "agent": agent,
                    "tasks": len(store.open_tasks(workspace, agent=agent.name)),
                    "calls": calls,
                    "denied": refused,
                    "approvals": seen.get(Effect.APPROVAL_REQUIRED.value, 0),
                    "risk": _risk(calls, refused),
                }
            )
        return self.page(
            "agents.html",
            rows=rows,
            can_admin=person.can(workspace, "admin"),
            **self.context(request, person, workspace, "agents"),
        )

    def agent(self, request: Request, person: Person, workspace: str) -> Response:
        store = self.guard.store
        name = request.path_params["agent"]
        agent = store.agent(workspace, name)
        if agent is None:
            raise NotFound(f"no agent {_quoted(name)} in {workspace}")
        tasks = store.open_task_records(workspace, name, limit=TASKS_SHOWN)
        grants = [g for g in store.credentials.grants(workspace) if g.agent == name]
        return self.page(
            "agent.html",
            agent=agent,
            keys=store.credentials.agent_keys(workspace, name),
            grants=grants,
            tasks=tasks,
            # A task's request (the user's words) may hold what the workspace's records cut
            # from the arguments, and which values a task's calls will carry is not known
            # ahead: it is shown only where the records keep arguments in full.
            requests_kept=self._redaction(workspace) is FULL,
            open_tasks=len(store.open_tasks(workspace, agent=name)),
            recent=store.decisions(workspace=workspace, agent=name, limit=10),
            can_admin=person.can(workspace, "admin"),
            now=time.time(),
            **self.context(request, person, workspace, "agents"),
        )

    def confirm_suspend(self, request: Request, person: Person, workspace: str) -> Response:
        name = request.path_params["agent"]
        if self.guard.store.agent(workspace, name) is None:  # no question in a link's words
            raise NotFound(f"no agent {_quoted(name)} in {workspace}")
        resume = request.url.path.endswith("/resume")
        what = "resume" if resume else "suspend"
        return self.page(
            "confirm.html",
            question=f"{what.capitalize()} agent {name}?",
            consequence=(
                f"{name} may act again under its grants and policies."
                if resume
                else f"Every call {name} makes is denied from now on, in every process, "
                "until someone resumes it. Its tasks stay open."
            ),
            confirm=f"Yes, {what} {name}",
            action=f"{self.base}/agents/{quote(name)}/{what}?workspace={quote(workspace)}",
            back=f"{self.base}/agents/{quote(name)}?workspace={quote(workspace)}",
            **self.context(request, person, workspace, "agents"),
        )

    def suspend(self, request: Request, person: Person, workspace: str) -> Response:
        name = request.path_params["agent"]
        if request.url.path.endswith("/resume"):
            self.guard.resume_agent(workspace, name)
            return self.done(f"/agents/{quote(name)}", workspace, f"{name} is active again.")
        self.guard.suspend_agent(workspace, name)
        return self.done(
            f"/agents/{quote(name)}", workspace, f"{name} is suspended: its calls are denied."
        )

    def confirm_revoke(self, request: Request, person: Person, workspace: str) -> Response:
        task = self._task(request, workspace)
        return self.page(
            "confirm.html",
            question=f"Revoke task {task.id}?",
            consequence=(
                f"The task of {task.agent} for {task.user} ends now: its tokens, and those of "
                "its sub-tasks, are refused everywhere, and its pending approvals are cancelled."
            ),
            confirm="Yes, revoke the task",
            action=f"{self.base}/tasks/{task.id}/revoke?workspace={quote(workspace)}",
            back=f"{self.base}/agents/{quote(task.agent)}?workspace={quote(workspace)}",
            **self.context(request, person, workspace, "agents"),
        )

    def revoke(self, request: Request, person: Person, workspace: str) -> Response:
        task = self._task(request, workspace)
        self.guard.revoke_task(task.id)
        return self.done(f"/agents/{quote(task.agent)}", workspace, f"Task {task.id} is revoked.")

    def _task(self, request: Request, workspace: str) -> Any:
        task = self.guard.store.task(request.path_params["task_id"])
        if task is None or task.workspace != workspace:
            raise NotFound(
                f"no task {_quoted(request.path_params['task_id'], 'with that id')} in {workspace}"
            )
        return task

    # -- decisions ---------------------------------------------------------------------------

    def decisions(self, request: Request, person: Person, workspace: str) -> Response:
        store = self.guard.store
        filters, before = _filters(request)
        page = store.decision_page(workspace, filters, before=before, limit=PAGE + 1)
        values: dict[str, Any] = {
            "rows": [record for _, record in page[:PAGE]],
            "older": page[PAGE - 1][0] if len(page) > PAGE else None,
            "filters": filters,
            "query": "&".join(f"{k}={quote(v)}" for k, v in filters.items() if v),
        }
        if request.url.path.endswith("/rows"):
            return self.page("decisions_rows.html", workspace=workspace, **values)
        since = time.time() - CHART_HOURS * 3600
        return self.page(
            "decisions.html",
            **_charts(
                store.decision_counts(workspace, since=since, by=("tool", "effect"), every=3600),
                since,
            ),
            effects=[e.value for e in Effect],
            live=before is None,
            **values,
            **self.context(request, person, workspace, "decisions"),
        )

    def decision(self, request: Request, person: Person, workspace: str) -> Response:
        record = self.guard.store.decision(request.path_params["decision_id"])
        if record is None or record.workspace != workspace:
            decision_id = request.path_params["decision_id"]
            raise NotFound(f"no decision {_quoted(decision_id, 'with that id')} in {workspace}")
        context = json.loads(record.context) if record.context else {}
        return self.page(
            "decision.html",
            record=record,
            reasons=json.loads(record.reasons),
            chain=_chain(record, context),
            context=record.context,
            **self.context(request, person, workspace, "decisions"),
        )

    # -- review ------------------------------------------------------------------------------

    def review(self, request: Request, person: Person, workspace: str) -> Response:
        days = request.query_params.get("days", "30")
        if days not in REVIEW_DAYS:
            raise InvalidInput(f"review the last {', '.join(REVIEW_DAYS)} days")
        now = time.time()
        report = review(self.guard.store, workspace, since=now - int(days) * 86400, until=now)
        return self.page(
            "review.html",
            report=report,
            days=days,
            choices=REVIEW_DAYS,
            **self.context(request, person, workspace, "review"),
        )

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        read = ("auditor",)
        inbox = ("approver", "auditor")
        policy = ("policy-author", "auditor")
        return [
            Route("/", self.home),
            Route("/sign-in", self.sign_in_page, methods=["GET"]),
            Route("/sign-in", self.sign_in, methods=["POST"]),
            Route("/sign-out", self.sign_out, methods=["POST"]),
            Route("/approvals", self.view(*inbox)(self.approvals)),
            Route("/approvals/list", self.view(*inbox)(self.approvals_list)),
            Route("/approvals/{approval_id}", self.view(*inbox)(self.approval)),
            Route(
                "/approvals/{approval_id}/answer",
                self.view("approver", post=True)(self.answer),
                methods=["POST"],
            ),
            Route("/agents", self.view(*read)(self.agents)),
            Route("/agents/{agent}", self.view(*read)(self.agent)),
            Route("/agents/{agent}/suspend", self.view("admin")(self.confirm_suspend)),
            Route("/agents/{agent}/resume", self.view("admin")(self.confirm_suspend)),
            Route(
                "/agents/{agent}/suspend",
                self.view("admin", post=True)(self.suspend),
                methods=["POST"],
            ),
            Route(
                "/agents/{agent}/resume",
                self.view("admin", post=True)(self.suspend),
                methods=["POST"],
            ),
            Route("/tasks/{task_id}/revoke", self.view("admin")(self.confirm_revoke)),
            Route(
                "/tasks/{task_id}/revoke",
                self.view("admin", post=True)(self.revoke),
                methods=["POST"],
            ),
            Route("/decisions", self.view(*read)(self.decisions)),
            Route("/decisions/rows", self.view(*read)(self.decisions)),
            Route("/decisions/{decision_id}", self.view(*read)(self.decision)),
            Route("/policies", self.view(*policy)(partial(policies.policies, self))),
            Route(
                "/policies",
                self.view("policy-author", post=True)(partial(policies.candidate, self)),
                methods=["POST"],
            ),
            Route("/policies/diff", self.view(*policy)(partial(policies.diff, self))),
            Route("/policies/{version}", self.view(*policy)(partial(policies.version, self))),
            Route("/review", self.view(*read)(self.review)),
            Mount("/static", StaticFiles(directory=STATIC)),
        ]


def console_mount(guard: Guard, public_url: str) -> Mount:
    """The console, mounted at /console of the service."""
    console = Console(guard, base="/console", secure=urlsplit(public_url).scheme == "https")
    routes = Router(routes=console.routes())
    pages = ExceptionMiddleware(routes, handlers={HTTPException: console.http_error})
    return Mount("/console", app=_Secured(pages))


class _Secured:
    """Every console response carries SECURITY_HEADERS: pages, redirects, static files and
    the framework's own errors alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, sending)


def _flash(request: Request) -> dict[str, Any]:
    """What the last action said (its cookie; see Console.done)."""
    said = request.cookies.get(FLASH, "")
    return {"flash": unquote(said.removeprefix("!")), "flash_error": said.startswith("!")}


async def _form(request: Request) -> dict[str, Any] | None:
    """The form's fields; None if it is over MAX_FORM bytes (or does not say its size, as
    every browser does)."""
    declared = request.headers.get("content-length", "")
    if not re.fullmatch(r"[0-9]{1,10}", declared) or int(declared) > MAX_FORM:
        return None
    return dict(await request.form())


def _as_kept(redaction: Redaction, approval: ApprovalRequest) -> tuple[str, tuple[str, ...]]:
    """A request's arguments and reasons as the workspace's decision records keep them."""
    cut = redaction.apply(
        json.loads(approval.args),
        context=None,
        reasons=tuple(Reason(Stage.APPROVAL, text) for text in approval.reasons),
        shadow=None,
    )
    if cut is None:
        return approval.args, approval.reasons
    return cut.args, tuple(reason.text for reason in cut.reasons)


def _shaped(value: str) -> bool:
    """Whether a value a link chose has the shape of an id or a name (a workspace's, an
    agent's: one lowercase segment, as every id is), so that a page may repeat it."""
    return re.fullmatch(SEGMENT_PATTERN, value) is not None


def _quoted(value: str, instead: str = "by that name") -> str:
    """A value a link chose, for an error page: quoted if it is shaped as an id or a name,
    else `instead`, so that no link can put words of its own on a page."""
    return repr(value) if _shaped(value) else instead


def _own(request: Request, message: str, instead: str) -> str:
    """An error's message, unless it repeats a value of the link (its path or query) that is
    not shaped as an id or a name: then `instead`."""
    chosen = [*request.path_params.values(), *request.query_params.values()]
    repeated = (
        value
        for value in chosen
        if isinstance(value, str) and value and (value in message or repr(value)[1:-1] in message)
    )
    return instead if any(not _shaped(value) for value in repeated) else message


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _local(target: str) -> str:
    """Only a path of this console is a place to go after signing in (no open redirect, and
    no way out of /console: no dot segments, plain or percent-encoded)."""
    path = unquote(target.partition("?")[0])
    if target.startswith("/console/") and "\\" not in target and "/." not in path:
        return target
    return ""


def _filters(request: Request) -> tuple[dict[str, str | None], int | None]:
    query = request.query_params
    filters = {k: (query.get(k) or None) for k in ("agent", "task_id", "tool", "effect")}
    if filters["effect"] is not None and filters["effect"] not in {e.value for e in Effect}:
        raise InvalidInput(f"effect is one of {', '.join(e.value for e in Effect)}")
    before = query.get("before")
    if before is not None and not re.fullmatch(r"[0-9]{1,18}", before):
        raise InvalidInput("before is a place in the log (a number)")
    return filters, int(before) if before else None


def _risk(calls: int, denied: int) -> str:
    """A plain reading of the last day: many refusals are what an owner should look at."""
    if calls == 0:
        return "idle"
    share = denied / calls
    return "high" if share >= 0.25 else "elevated" if share >= 0.05 else "low"


def _charts(counts: list[tuple[Any, ...]], since: float) -> dict[str, Any]:
    """From (hour, tool, effect, count) rows: decisions per hour by effect, as the bars of an
    inline SVG chart, and the most denied tools."""
    first = int(since // 3600)
    hours = [first + i for i in range(CHART_HOURS + 1)]
    by_hour: dict[int, dict[str, int]] = {h: {} for h in hours}
    denied: dict[str, int] = {}
    for hour, tool, effect, n in counts:
        if int(hour) in by_hour:
            by_hour[int(hour)][effect] = by_hour[int(hour)].get(effect, 0) + n
        if effect == Effect.DENY.value:
            denied[tool] = denied.get(tool, 0) + n
    peak = max([sum(c.values()) for c in by_hour.values()] + [1])
    scale = 10 ** max(0, math.floor(math.log10(peak)))
    top = math.ceil(peak / scale) * scale
    bars = []
    for i, hour in enumerate(hours):
        y = 0.0
        for effect in (e.value for e in Effect):
            n = by_hour[hour].get(effect, 0)
            height = 120 * n / top
            if n:
                bars.append({"x": 40 + i * 22, "y": 140 - y - height, "h": height,
                             "effect": effect, "n": n, "hour": hour})  # fmt: skip
            y += height
    labels = [{"x": 40 + i * 22, "text": time.strftime("%H", time.gmtime(h * 3600))}
              for i, h in enumerate(hours) if i % 4 == 0]  # fmt: skip
    ranked = sorted(((n, tool) for tool, n in denied.items()), reverse=True)[:TOP_DENIED]
    most = ranked[0][0] if ranked else 1
    return {
        "chart": {"bars": bars, "top": top, "labels": labels, "total": sum(b["n"] for b in bars)},
        "denied": [{"tool": tool, "n": n, "width": 100 * n / most} for n, tool in ranked],
    }


def _chain(record: Any, context: dict[str, Any]) -> list[str]:
    """Who the call was made for, hop by hop: the user, each agent that delegated (the `act`
    chain of its token, nearest last), then the agent that made it."""
    delegation = context.get("delegation") or {}
    delegators = delegation.get("delegators") if isinstance(delegation, dict) else None
    hops = [record.user] if record.user else []
    hops += [str(name) for name in reversed(delegators or [])]
    if record.agent:
        hops.append(record.agent)
    return hops


__all__ = ["Console", "console_mount"]
