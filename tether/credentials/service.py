"""The credential service: issues task tokens by token exchange, verifies them on every call,
revokes them, and hands out downstream tokens. The public face of `tether.credentials`.

Verification is on the decision's hot path, so a verified token is cached by the SHA-256 of its
text until it expires: a cached check is a hash, a dict lookup and the revocation sets (which are
consulted on every call, cached or not). DPoP proofs are never cached: each is checked and its
`jti` recorded, every time.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from tether.credentials import access_token
from tether.credentials.access_token import DOWNSTREAM_USE, TASK_USE, AccessClaims, issued_at
from tether.credentials.actors import authenticate_actor
from tether.credentials.dpop import RememberOnce, check_proof
from tether.credentials.grants import find_grant, live_grant
from tether.credentials.jws import MAX_TOKEN_BYTES
from tether.credentials.revocation import Revocations, Revoked
from tether.credentials.signing_keys import Keyring, load_master_key
from tether.credentials.token_exchange import (
    ACCESS_TOKEN_TYPE,
    GRANT_TOKEN_TYPE,
    GRANT_TYPE,
    JWT_SVID_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    USER_TOKEN_TYPE,
    ExchangeRequest,
    ExchangeResponse,
    attenuate,
    child_bounds,
    root_bounds,
)
from tether.errors import CredentialRefused, InvalidInput, NotFound
from tether.identity import revoke_key
from tether.identity.agent_keys import key_subject
from tether.model import Agent, Effect, EventSink, Grant, Task, TaskStatus, new_id, no_events
from tether.store import Store
from tether.store.credentials import TokenRecord

DEFAULT_TOKEN_TTL = 300.0
MAX_TOKEN_TTL = 3600.0
DOWNSTREAM_TTL = 60.0
DEFAULT_TASK_TTL = 15 * 60.0
MAX_DEPTH = 4
CLOCK_SKEW = 30.0
MAX_SKEW = 300.0  # what a deployment may allow; identity.agent_keys counts on it
CACHE_SIZE = 100_000
MAX_AUDIENCE = 512
MAX_REQUEST = 16384


@dataclass(frozen=True)
class Settings:
    """`issuer`: this service's name in tokens (`iss`, and the audience of agent assertions);
    `audience`: the decision point's audience, which task tokens carry; `token_url`: the token
    endpoint, as the `htu` of the proofs sent to it."""

    issuer: str = "tether"
    audience: str = "tether:pdp"
    token_url: str = "tether:token"  # what DPoP proofs sent to the token endpoint name (htu)
    token_ttl: float = DEFAULT_TOKEN_TTL
    max_depth: int = MAX_DEPTH
    skew: float = CLOCK_SKEW

    def __post_init__(self) -> None:
        if not 0 < self.token_ttl <= MAX_TOKEN_TTL:
            raise InvalidInput(f"token_ttl must be between 0 and {MAX_TOKEN_TTL:.0f} seconds")
        if not 1 <= self.max_depth <= 16:
            raise InvalidInput("max_depth must be between 1 and 16")
        if not 0 <= self.skew <= MAX_SKEW:
            raise InvalidInput(f"skew must be between 0 and {MAX_SKEW:.0f} seconds")


@dataclass(frozen=True)
class Issued:
    response: ExchangeResponse
    claims: AccessClaims
    task: Task


@dataclass(frozen=True)
class _Verified:
    claims: AccessClaims
    kid: str


class Credentials:
    def __init__(
        self,
        store: Store,
        *,
        master_key: bytes | None = None,
        home: str | Path | None = None,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
        events: EventSink = no_events,
    ) -> None:
        """`events`: every token issued and every revocation also goes to the audit log."""
        self.store = store
        self.settings = settings or Settings()
        self._events = events
        self._clock = clock
        self.keyring = Keyring(
            store,
            master_key if master_key is not None else load_master_key(home),
            max_token_ttl=MAX_TOKEN_TTL,  # whatever any process issues, a key outlives its tokens
            skew=self.settings.skew,
            clock=clock,
        )
        self.revocations = Revocations(store, skew=self.settings.skew, clock=clock)
        self._verified: dict[bytes, _Verified] = {}
        self._cache_lock = threading.Lock()

    # -- the hot path --------------------------------------------------------------------------

    def authenticate(
        self,
        token: object,
        *,
        proof: str | None = None,
        htm: str = "POST",
        htu: str = "",
        require_proof: bool = False,
        remember_once: RememberOnce | None = None,
    ) -> AccessClaims:
        """The claims of a valid, unrevoked task token, proven by its holder when a proof is
        given or required. Raises CredentialRefused with the reason; its `subject` is the
        token's claims only when the caller is its holder (or no proof was asked for) and the
        token was revoked, so a thief's attempts are never counted against the task.

        `remember_once`: where the proof's one-time id goes; by default the replay cache at
        once. The pipeline claims it in the decision's own transaction instead."""
        now = self._clock()
        claims = self._verify(token, now)
        if claims.use != TASK_USE:
            raise CredentialRefused(
                "a downstream token is for the API it names, not for Tether", "invalid_token"
            )
        if proof is not None or require_proof:
            assert isinstance(token, str)
            jkt = check_proof(
                proof,
                htm=htm,
                htu=htu,
                now=now,
                remember_once=remember_once or self._remember_once(now),
                access_token=token,
                skew=self.settings.skew,
            )
            if jkt != claims.jkt:
                raise CredentialRefused(
                    "the DPoP proof is signed with another key than the token is bound to",
                    "invalid_dpop_proof",
                )
        why = self.revocations.check(claims, now)
        if why is not None:
            raise CredentialRefused(f"the token is revoked: {why}", subject=claims)
        return claims

    def _verify(self, token: object, now: float) -> AccessClaims:
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_BYTES:
            raise CredentialRefused("the access token is not a compact JWS of at most 8 KiB")
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._verified.get(digest)
        if (
            hit is not None
            and now < hit.claims.exp
            and self.keyring.verification_key(hit.kid, now) is not None
        ):
            return hit.claims
        settings = self.settings
        claims, key = access_token.decode(
            token,
            self.keyring,
            issuer=settings.issuer,
            audience=settings.audience,
            now=now,
            skew=settings.skew,
        )
        with self._cache_lock:
            if len(self._verified) >= CACHE_SIZE:
                self._verified = (
                    {d: v for d, v in self._verified.items() if now < v.claims.exp}
                    if len(self._verified) < 2 * CACHE_SIZE
                    else {}
                )
            self._verified[digest] = _Verified(claims, key.kid)
        return claims

    def claim_once(self, once: Sequence[tuple[str, float]]) -> bool:
        """Write one-time ids checked earlier but not written (a proof verified at a door that
        may yet have them claimed with a decision: `Guard.authorize_async(once=...)`); False if
        one of them was used before."""
        now = self._clock()
        return all(self.store.credentials.remember_once(key, until, now) for key, until in once)

    def _remember_once(self, now: float) -> Callable[[str, float], bool]:
        return lambda key, until: self.store.credentials.remember_once(key, until, now)

    # -- token exchange (RFC 8693) -------------------------------------------------------------

    def exchange(self, request: ExchangeRequest, *, dpop_jkt: str | None = None) -> Issued:
        """A task token for the actor, on the subject's authority; see token_exchange.py.

        `dpop_jkt`: the thumbprint of the key that signed this request's DPoP proof (checked by
        the caller, which knows the request's method and URL). The token is bound to the actor's
        key: an assertion's, which the proof must then match, or for a JWT-SVID the proof's."""
        now = self._clock()
        settings = self.settings
        if request.grant_type != GRANT_TYPE:
            raise CredentialRefused(f"grant_type must be {GRANT_TYPE}", "unsupported_grant_type")
        if request.requested_token_type != ACCESS_TOKEN_TYPE:
            raise CredentialRefused(
                f"only {ACCESS_TOKEN_TYPE} can be issued here", "invalid_request"
            )
        actor = authenticate_actor(
            self.store,
            token=request.actor_token,
            token_type=request.actor_token_type,
            jwt_type=JWT_TOKEN_TYPE,
            svid_type=JWT_SVID_TOKEN_TYPE,
            dpop_jkt=dpop_jkt,
            issuer=settings.issuer,
            skew=settings.skew,
            now=now,
            subject_workspace=lambda: self._subject_workspace(request, now),
        )
        agent = actor.agent
        grant, parent = self._subject(request, agent, now)
        if grant.workspace != agent.workspace:
            raise CredentialRefused(
                f"the actor belongs to workspace {agent.workspace}, the grant to {grant.workspace}",
                "invalid_client",
            )
        _may_act(grant, agent, parent)
        bounds = (
            root_bounds(grant, settings.audience) if parent is None else child_bounds(parent, grant)
        )
        renewing = self._renewing(request, grant, agent, parent, now)
        requested = frozenset(request.scope.split()) if request.scope is not None else None
        if renewing is not None:
            requested = frozenset(renewing.tools) if requested is None else requested
            beyond = sorted(requested - set(renewing.tools))
            if beyond:
                raise CredentialRefused(
                    f"scope asks for {beyond}: not granted to task {renewing.id}", "invalid_scope"
                )
        task_end = (
            renewing.expires_at
            if renewing is not None
            else self._new_task_end(request, grant, parent, now)
        )
        new = attenuate(
            bounds,
            requested=requested,
            ceiling=frozenset(agent.ceiling) if agent.ceiling is not None else None,
            audience=request.audience,
            lifetime=settings.token_ttl,
            not_after=min(task_end, actor.key_end or math.inf),  # not past a retiring key
            now=now,
            max_depth=settings.max_depth,
        )
        task = renewing or Task(
            id=new_id("task_"),
            workspace=grant.workspace,
            agent=agent.name,
            user=grant.user,
            request=self._users_request(request, parent),
            tools=tuple(sorted(new.tools)),
            created_at=now,
            expires_at=task_end,
            grant=grant.id,
            parent=parent.task if parent is not None else None,
        )
        act = {"sub": agent.spiffe_id, **({"act": parent.act} if parent is not None else {})}
        claims = AccessClaims(
            iss=settings.issuer,
            sub=grant.user,
            aud=new.audience,
            exp=int(new.expires_at),
            iat=issued_at(now),
            jti=new_id("tok_"),
            client_id=agent.spiffe_id,
            scope=" ".join(sorted(new.tools)),
            act=act,
            ws=grant.workspace,
            agent=agent.name,
            task=task.id,
            grant=grant.id,
            use=TASK_USE,
            depth=new.depth,
            chain=(*parent.chain, parent.jti) if parent is not None else (),
            tasks=(*parent.tasks, parent.task) if parent is not None else (),
            keys=_keys_of(parent),
            parent_jti=parent.jti if parent is not None else None,
            cnf={"jkt": actor.jkt},
        )
        self._refuse_if_revoked(claims, now)  # before the task is stored: nothing half-made
        if renewing is None:
            self.store.insert_task(task)
        return self._issue(claims, task, now, token_type="DPoP")

    def _refuse_if_revoked(self, claims: AccessClaims, now: float) -> None:
        """No token is issued dead on arrival (its agent suspended this very moment, say)."""
        why = self.revocations.check(claims, now)
        if why is not None:
            raise CredentialRefused(f"the token would be revoked: {why}", "invalid_grant")

    def _subject_workspace(self, request: ExchangeRequest, now: float) -> str:
        """The subject's workspace, for checking a JWT-SVID, before the actor is proven: a
        subject that does not resolve gets one reason, whatever is wrong with it."""
        try:
            if request.subject_token_type == GRANT_TOKEN_TYPE:
                grant = self.store.credentials.grant(request.subject_token)
                if grant is not None:
                    return grant.workspace
            elif request.subject_token_type == ACCESS_TOKEN_TYPE:
                return self._verify(request.subject_token, now).ws
        except CredentialRefused:
            pass
        raise CredentialRefused("the subject token is not valid", "invalid_grant")

    def _subject(
        self, request: ExchangeRequest, agent: Agent, now: float
    ) -> tuple[Grant, AccessClaims | None]:
        """On whose authority: the grant, and the parent token when delegating further.
        `agent`: the actor, proven by now (so a user's grants are looked up only for it)."""
        if request.subject_token_type == GRANT_TOKEN_TYPE:
            return live_grant(self.store, request.subject_token, now), None
        if request.subject_token_type == USER_TOKEN_TYPE:
            tools = request.scope.split() if request.scope is not None else ()
            grant = find_grant(
                self.store,
                workspace=agent.workspace,
                user=request.subject_token,
                agent=agent.name,
                tools=tools,
                now=now,
            )
            return grant, None
        if request.subject_token_type == ACCESS_TOKEN_TYPE:
            # Delegating a token takes its key: the delegator proves it holds the parent.
            parent = self.authenticate(
                request.subject_token,
                proof=request.subject_proof,
                htu=self.settings.token_url,
                require_proof=True,
            )
            return live_grant(self.store, parent.grant, now), parent
        raise CredentialRefused(
            f"subject_token_type must be {GRANT_TOKEN_TYPE}, {USER_TOKEN_TYPE} or "
            f"{ACCESS_TOKEN_TYPE}",
            "invalid_request",
        )

    def proven_key(self, proof: str | None) -> str:
        """The thumbprint of the key that signed `proof`, a DPoP proof sent with a request to
        the token endpoint (what `exchange` binds the token to). Raises CredentialRefused."""
        now = self._clock()
        return check_proof(
            proof,
            htm="POST",
            htu=self.settings.token_url,
            now=now,
            remember_once=self._remember_once(now),
            skew=self.settings.skew,
        )

    def downstream(
        self, subject_token: str, *, proof: str | None, audience: str, decision_id: str
    ) -> Issued:
        """An audience-restricted token for one downstream API, for the tool of one allowed
        decision of the task, living at most DOWNSTREAM_TTL seconds, so the agent's own token
        never has to leave Tether. Only the holder of the task token's key may ask: `proof` is
        a DPoP proof for the token endpoint (`Settings.token_url`)."""
        now = self._clock()
        parent = self.authenticate(
            subject_token, proof=proof, htu=self.settings.token_url, require_proof=True
        )
        if not isinstance(audience, str) or not 0 < len(audience) <= MAX_AUDIENCE:
            raise CredentialRefused("name the downstream API (audience)", "invalid_target")
        if audience in (self.settings.audience, self.settings.issuer):
            raise CredentialRefused(
                "a downstream token cannot be for Tether itself", "invalid_target"
            )
        decision = self.store.decision(decision_id) if isinstance(decision_id, str) else None
        if (
            decision is None
            or decision.task_id != parent.task
            or decision.effect is not Effect.ALLOW
            or now - decision.ts > DOWNSTREAM_TTL
        ):
            raise CredentialRefused(
                f"{decision_id} is not a recent allowed call of task {parent.task}",
                "invalid_grant",
            )
        once = hashlib.sha256(f"downstream:{decision.id}".encode()).hexdigest()
        if not self.store.credentials.remember_once(once, now + DOWNSTREAM_TTL * 2, now):
            raise CredentialRefused(
                f"a downstream token was already issued for {decision.id}: one call, one token",
                "invalid_grant",
            )
        tool = decision.tool
        if tool not in parent.tools:
            raise CredentialRefused(
                f"tool {tool} is outside the token's scope ({parent.scope})", "invalid_scope"
            )
        task = self.store.task(parent.task)
        if task is None:
            raise CredentialRefused(f"task {parent.task} is unknown", "invalid_grant")
        # The parent's claims, narrowed: who, for whom, under which grant stay; the rest is
        # this API, this one call, this minute.
        claims = msgspec.structs.replace(
            parent,
            aud=audience,
            exp=math.floor(min(now + DOWNSTREAM_TTL, parent.exp)),
            iat=issued_at(now),
            jti=new_id("tok_"),
            scope=tool,
            use=DOWNSTREAM_USE,
            decision=decision.id,
            chain=(*parent.chain, parent.jti),
            parent_jti=parent.jti,
            cnf=None,
        )
        return self._issue(claims, task, now, token_type="Bearer")

    def _issue(self, claims: AccessClaims, task: Task, now: float, *, token_type: str) -> Issued:
        """Record and sign a token."""
        self._refuse_if_revoked(claims, now)
        self.store.credentials.add_token(
            TokenRecord(
                jti=claims.jti,
                workspace=claims.ws,
                agent=claims.agent,
                user=claims.sub,
                task_id=claims.task,
                parent_jti=claims.parent_jti,
                grant_id=claims.grant,
                use=claims.use,
                audience=claims.aud,
                issued_at=now,
                expires_at=float(claims.exp),
            )
        )
        self._events(  # before the token leaves: a token the log cannot tell of is not issued
            "credential.issued",
            workspace=claims.ws,
            actor=claims.agent,
            subject=claims.jti,
            user=claims.sub,
            use=claims.use,
            task=claims.task,
            grant=claims.grant,
            scope=claims.scope,
            audience=claims.aud,
            expires_at=claims.exp,
            parent=claims.parent_jti,
            depth=claims.depth,
            decision=claims.decision,
            key=(claims.cnf or {}).get("jkt"),
        )
        response = ExchangeResponse(
            access_token=access_token.issue(claims, self.keyring.signing_key(now)),
            issued_token_type=ACCESS_TOKEN_TYPE,
            token_type=token_type,  # DPoP: bound to a key; Bearer: downstream, one API, 60 s
            expires_in=int(claims.exp - claims.iat),
            scope=claims.scope,
            task_id=task.id,
        )
        return Issued(response, claims, task)

    def _renewing(
        self,
        request: ExchangeRequest,
        grant: Grant,
        agent: Agent,
        parent: AccessClaims | None,
        now: float,
    ) -> Task | None:
        """The task whose token is being renewed, if the request names one."""
        if request.task_id is None:
            return None
        task = self.store.task(request.task_id)
        if (
            task is None
            or task.workspace != grant.workspace
            or task.agent != agent.name
            or task.grant != grant.id
            or task.parent != (parent.task if parent is not None else None)
        ):
            raise CredentialRefused(
                f"task {request.task_id} is not a task of this agent under this grant",
                "invalid_grant",
            )
        if task.status is not TaskStatus.OPEN or now >= task.expires_at:
            status = task.status.value if task.status is not TaskStatus.OPEN else "expired"
            raise CredentialRefused(f"task {task.id} is {status}", "invalid_grant")
        return task

    def _users_request(self, request: ExchangeRequest, parent: AccessClaims | None) -> str:
        """The user's request a new task carries: a sub-task carries its parent's, since the
        agent handing work on is not the user. Its words in `request` would count as the
        user's (a value they hold would have the provenance `user`), so a different text is
        refused rather than taken."""
        if parent is None:
            return request.request
        task = self.store.task(parent.task)
        if task is None:
            raise CredentialRefused(f"task {parent.task} is unknown", "invalid_grant")
        if request.request and request.request != task.request:
            raise CredentialRefused(
                f"a sub-task carries the user's request of task {task.id}; the delegating "
                "agent cannot write another (its instructions to the sub-agent are its own, "
                "not the user's)",
                "invalid_request",
            )
        return task.request

    def _new_task_end(
        self, request: ExchangeRequest, grant: Grant, parent: AccessClaims | None, now: float
    ) -> float:
        """When a new task must end: its asked-for life, within the grant's and the parent's."""
        ttl = (
            request.task_ttl
            if request.task_ttl is not None
            else min(DEFAULT_TASK_TTL, grant.max_ttl)
        )
        if not 0 < ttl <= grant.max_ttl:
            raise CredentialRefused(
                f"task_ttl must be between 0 and the grant's max_ttl ({grant.max_ttl:.0f} s)",
                "invalid_request",
            )
        if len(request.request) > MAX_REQUEST:
            raise CredentialRefused(
                f"the task's request must be at most {MAX_REQUEST} characters", "invalid_request"
            )
        end = min(now + ttl, grant.expires_at)
        if parent is not None:
            parent_task = self.store.task(parent.task)
            if parent_task is None:
                raise CredentialRefused(f"task {parent.task} is unknown", "invalid_grant")
            end = min(end, parent_task.expires_at)
        return end

    # -- revocation ----------------------------------------------------------------------------

    def revoke_token(self, jti: str, *, reason: str = "revoked") -> None:
        record = self.store.credentials.token(jti)
        if record is None:
            raise NotFound(f"no token {jti!r} was issued here")
        self._revoke(
            Revoked.TOKEN,
            record.workspace,
            jti,
            reason=reason,
            expires_at=record.expires_at + self.settings.skew,
        )

    def revoke_task(self, task_id: str, *, status: TaskStatus = TaskStatus.REVOKED) -> list[str]:
        """Revoke a task and every task delegated from it; returns their ids. With `status`
        ENDED, the task finished: its tokens, and its sub-tasks', are refused all the same."""
        task = self.store.task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        tree = self.store.credentials.task_tree(task_id)
        now = self._clock()
        for tid in tree:
            self.store.finish_task(tid, status, now)
        # No token outlives its task: the revocation can be forgotten after the task's end.
        self._revoke(
            Revoked.TASK,
            task.workspace,
            task_id,
            reason=status.value,
            expires_at=task.expires_at + self.settings.skew,
        )
        return tree

    def revoke_agent_key(self, workspace: str, agent: str, kid: str) -> None:
        """The key proves nothing from now on, and every token bound to it is refused: this
        agent's, in this workspace (another agent presenting the same public key is not it)."""
        revoke_key(self.store, workspace, agent, kid, self._clock())  # with its revocation
        self.revocations.refresh()  # enforced here at once, elsewhere at the next poll
        self._events(
            "credential.revoked",
            workspace=workspace,
            actor=None,
            subject=kid,
            revoked=Revoked.KEY.value,
            reason="its key was revoked",
        )

    def revoke_grant(self, grant_id: str, *, reason: str = "revoked by its user") -> None:
        grant = self.store.credentials.grant(grant_id)
        if grant is None:
            raise NotFound(f"no grant {grant_id!r}")
        self.store.credentials.revoke_grant(grant_id, self._clock())
        self._revoke(
            Revoked.GRANT,
            grant.workspace,
            grant_id,
            reason=reason,
            expires_at=grant.expires_at + self.settings.skew,  # no token outlives its grant
        )

    def revoke_agent(self, workspace: str, agent: str, *, reason: str = "suspended") -> list[str]:
        """Refuse every token the agent holds now and end its open tasks; returns their ids."""
        if self.store.agent(workspace, agent) is None:
            raise NotFound(f"agent {agent!r} is not registered in workspace {workspace!r}")
        now = self._clock()
        ended = self.store.open_tasks(workspace, agent=agent)
        for task_id in ended:
            self.store.finish_task(task_id, TaskStatus.REVOKED, now)
        self._revoke(
            Revoked.AGENT, workspace, agent, reason=reason, expires_at=self._forgettable(now)
        )
        return ended

    def revoke_workspace(self, workspace: str, *, reason: str = "revoked") -> list[str]:
        if self.store.workspace(workspace) is None:
            raise NotFound(f"workspace {workspace!r} does not exist")
        now = self._clock()
        ended = self.store.open_tasks(workspace)
        for task_id in ended:
            self.store.finish_task(task_id, TaskStatus.REVOKED, now)
        self._revoke(
            Revoked.WORKSPACE,
            workspace,
            workspace,
            reason=reason,
            expires_at=self._forgettable(now),
        )
        return ended

    def _revoke(
        self, kind: Revoked, workspace: str, target: str, *, reason: str, expires_at: float
    ) -> None:
        self.revocations.revoke(kind, workspace, target, reason=reason, expires_at=expires_at)
        self._events(
            "credential.revoked",
            workspace=workspace,
            actor=None,
            subject=target,
            revoked=kind.value,
            reason=reason,
        )

    def _forgettable(self, now: float) -> float:
        """When a revocation of everything issued until `now` can no longer refuse anything."""
        return now + MAX_TOKEN_TTL + 2 * self.settings.skew

    def jwks(self) -> dict[str, object]:
        return self.keyring.jwks(self._clock())


def _may_act(grant: Grant, agent: Agent, parent: AccessClaims | None) -> None:
    """The grant's agent starts a chain; only it and the agents it names may continue one."""
    if parent is None and agent.name != grant.agent:
        raise CredentialRefused(
            f"grant {grant.id} delegates to agent {grant.agent}, not {agent.name}",
            "invalid_grant",
        )
    if parent is not None and agent.name not in (grant.agent, *grant.may_act):
        allowed = ", ".join((grant.agent, *grant.may_act))
        raise CredentialRefused(
            f"grant {grant.id} does not let agent {agent.name} act (may_act: {allowed})",
            "invalid_grant",
        )


def _keys_of(parent: AccessClaims | None) -> tuple[str, ...]:
    """The keys a delegated token's ancestors were bound to: its parent's and the parent's own."""
    if parent is None:
        return ()
    own = (key_subject(parent.agent, parent.jkt),) if parent.jkt else ()
    return (*parent.keys, *own)
