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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tether.credentials import access_token
from tether.credentials.access_token import DOWNSTREAM_USE, TASK_USE, AccessClaims, issued_at
from tether.credentials.dpop import check_proof
from tether.credentials.grants import live_grant
from tether.credentials.jwt_assertion import assertion_subject, verify_assertion
from tether.credentials.revocation import Revocations, Revoked
from tether.credentials.signing_keys import Keyring, SigningKey, load_master_key
from tether.credentials.token_exchange import (
    ACCESS_TOKEN_TYPE,
    GRANT_TOKEN_TYPE,
    GRANT_TYPE,
    JWT_SVID_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    ExchangeRequest,
    ExchangeResponse,
    attenuate,
    child_bounds,
    root_bounds,
)
from tether.errors import CredentialRefused, InvalidInput, NotFound
from tether.identity import parse_agent_spiffe_id, verification_key, verify_jwt_svid
from tether.model import Agent, AgentStatus, Grant, Task, TaskStatus, new_id
from tether.store import Store
from tether.store.credentials import TokenRecord

DEFAULT_TOKEN_TTL = 300.0
MAX_TOKEN_TTL = 3600.0
DOWNSTREAM_TTL = 60.0
DEFAULT_TASK_TTL = 15 * 60.0
MAX_DEPTH = 4
CLOCK_SKEW = 30.0
CACHE_SIZE = 100_000
MAX_AUDIENCE = 512
MAX_REQUEST = 16384


@dataclass(frozen=True)
class Settings:
    """`issuer`: this service's name in tokens (`iss`, and the audience of agent assertions);
    `audience`: the decision point's audience, which task tokens carry."""

    issuer: str = "tether"
    audience: str = "tether:pdp"
    token_ttl: float = DEFAULT_TOKEN_TTL
    max_depth: int = MAX_DEPTH
    skew: float = CLOCK_SKEW

    def __post_init__(self) -> None:
        if not 0 < self.token_ttl <= MAX_TOKEN_TTL:
            raise InvalidInput(f"token_ttl must be between 0 and {MAX_TOKEN_TTL:.0f} seconds")
        if not 1 <= self.max_depth <= 16:
            raise InvalidInput("max_depth must be between 1 and 16")


@dataclass(frozen=True)
class Issued:
    response: ExchangeResponse
    claims: AccessClaims
    task: Task


@dataclass(frozen=True)
class _Verified:
    claims: AccessClaims
    key: SigningKey


class Credentials:
    def __init__(
        self,
        store: Store,
        *,
        master_key: bytes | None = None,
        home: str | Path | None = None,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or Settings()
        self._clock = clock
        self.keyring = Keyring(
            store,
            master_key if master_key is not None else load_master_key(home),
            max_token_ttl=self.settings.token_ttl,
            skew=self.settings.skew,
            clock=clock,
        )
        self.revocations = Revocations(store, clock=clock)
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
    ) -> AccessClaims:
        """The claims of a valid, unrevoked task token, proven by its holder when a proof is
        given or required. Raises CredentialRefused with the reason."""
        now = self._clock()
        claims = self._verify(token, now)
        if claims.use != TASK_USE:
            raise CredentialRefused(
                "a downstream token is for the API it names, not for Tether", "invalid_token"
            )
        why = self.revocations.check(claims, now)
        if why is not None:
            raise CredentialRefused(f"the token is revoked: {why}", subject=claims)
        if proof is not None or require_proof:
            assert isinstance(token, str)
            try:
                jkt = check_proof(
                    proof,
                    htm=htm,
                    htu=htu,
                    now=now,
                    remember_once=self._remember_once(now),
                    access_token=token,
                    skew=self.settings.skew,
                )
            except CredentialRefused as exc:
                exc.subject = claims
                raise
            if jkt != claims.jkt:
                raise CredentialRefused(
                    "the DPoP proof is signed with another key than the token is bound to",
                    "invalid_dpop_proof",
                    subject=claims,
                )
        return claims

    def _verify(self, token: object, now: float) -> AccessClaims:
        digest = hashlib.sha256(token.encode()).digest() if isinstance(token, str) else b""
        hit = self._verified.get(digest)
        if hit is not None and now < hit.claims.exp and hit.key.verifies_at(now):
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
            self._verified[digest] = _Verified(claims, key)
        return claims

    def _remember_once(self, now: float) -> Callable[[str, float], bool]:
        return lambda key, until: self.store.credentials.remember_once(key, until, now)

    # -- token exchange (RFC 8693) -------------------------------------------------------------

    def exchange(self, request: ExchangeRequest, *, dpop_jkt: str | None = None) -> Issued:
        """A task token for the actor, on the subject's authority; see token_exchange.py.

        `dpop_jkt`: the thumbprint of the key that signed this request's DPoP proof (checked by
        the caller, which knows the request's method and URL); the token is bound to it."""
        now = self._clock()
        settings = self.settings
        if request.grant_type != GRANT_TYPE:
            raise CredentialRefused(f"grant_type must be {GRANT_TYPE}", "unsupported_grant_type")
        if request.requested_token_type != ACCESS_TOKEN_TYPE:
            raise CredentialRefused(
                f"only {ACCESS_TOKEN_TYPE} can be issued here", "invalid_request"
            )
        grant, parent = self._subject(request, now)
        agent, jkt = self._actor(request, grant.workspace, dpop_jkt, now)
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
            not_after=task_end,
            now=now,
            max_depth=settings.max_depth,
        )
        task = renewing or Task(
            id=new_id("task_"),
            workspace=grant.workspace,
            agent=agent.name,
            user=grant.user,
            request=request.request,
            tools=tuple(sorted(new.tools)),
            created_at=now,
            expires_at=task_end,
            grant=grant.id,
            parent=parent.task if parent is not None else None,
        )
        if renewing is None:
            self.store.insert_task(task)
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
            parent_jti=parent.jti if parent is not None else None,
            cnf={"jkt": jkt},
        )
        return self._issue(claims, task, now, token_type="DPoP")

    def _subject(self, request: ExchangeRequest, now: float) -> tuple[Grant, AccessClaims | None]:
        """On whose authority: the grant, and the parent token when delegating further."""
        if request.subject_token_type == GRANT_TOKEN_TYPE:
            return live_grant(self.store, request.subject_token, now), None
        if request.subject_token_type == ACCESS_TOKEN_TYPE:
            parent = self.authenticate(request.subject_token)
            return live_grant(self.store, parent.grant, now), parent
        raise CredentialRefused(
            f"subject_token_type must be {GRANT_TOKEN_TYPE} or {ACCESS_TOKEN_TYPE}",
            "invalid_request",
        )

    def downstream(
        self, subject_token: str, *, audience: str, tool: str, dpop_jkt: str | None
    ) -> Issued:
        """An audience-restricted token for one downstream API and one tool, living at most
        DOWNSTREAM_TTL seconds, so the agent's own token never has to leave Tether. Only the
        holder of the task token's key may ask (`dpop_jkt` from the request's proof)."""
        now = self._clock()
        parent = self.authenticate(subject_token)
        if dpop_jkt is None or dpop_jkt != parent.jkt:
            raise CredentialRefused(
                "a downstream token is issued only to the holder of the task token's key (DPoP)",
                "invalid_dpop_proof",
            )
        if not isinstance(audience, str) or not 0 < len(audience) <= MAX_AUDIENCE:
            raise CredentialRefused("name the downstream API (audience)", "invalid_target")
        if audience in (self.settings.audience, self.settings.issuer):
            raise CredentialRefused(
                "a downstream token cannot be for Tether itself", "invalid_target"
            )
        if tool not in parent.tools:
            raise CredentialRefused(
                f"tool {tool} is outside the token's scope ({parent.scope})", "invalid_scope"
            )
        task = self.store.task(parent.task)
        if task is None:
            raise CredentialRefused(f"task {parent.task} is unknown", "invalid_grant")
        claims = AccessClaims(
            iss=self.settings.issuer,
            sub=parent.sub,
            aud=audience,
            exp=math.floor(min(now + DOWNSTREAM_TTL, parent.exp)),
            iat=issued_at(now),
            jti=new_id("tok_"),
            client_id=parent.client_id,
            scope=tool,
            act=parent.act,
            ws=parent.ws,
            agent=parent.agent,
            task=parent.task,
            grant=parent.grant,
            use=DOWNSTREAM_USE,
            depth=parent.depth,
            chain=(*parent.chain, parent.jti),
            tasks=parent.tasks,
            parent_jti=parent.jti,
        )
        return self._issue(claims, task, now, token_type="Bearer")

    def _issue(self, claims: AccessClaims, task: Task, now: float, *, token_type: str) -> Issued:
        """Record and sign a token, unless a revocation already covers it (an agent suspended
        this very millisecond): no token is issued dead on arrival."""
        why = self.revocations.check(claims, now)
        if why is not None:
            raise CredentialRefused(f"the token would be revoked: {why}", "invalid_grant")
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
        response = ExchangeResponse(
            access_token=access_token.issue(claims, self.keyring.signing_key(now)),
            issued_token_type=ACCESS_TOKEN_TYPE,
            token_type=token_type,  # DPoP: bound to a key; Bearer: downstream, one API, 60 s
            expires_in=int(claims.exp - claims.iat),
            scope=claims.scope,
            task_id=task.id,
        )
        return Issued(response, claims, task)

    def _actor(
        self, request: ExchangeRequest, workspace: str, dpop_jkt: str | None, now: float
    ) -> tuple[Agent, str]:
        """The registered, active agent the actor token proves, and the key to bind to."""
        if request.actor_token_type == JWT_TOKEN_TYPE:
            spiffe_id, kid = assertion_subject(request.actor_token)
            try:
                _, agent_ws, name = parse_agent_spiffe_id(spiffe_id)
            except InvalidInput as exc:
                raise CredentialRefused(str(exc), "invalid_client") from exc
            if agent_ws != workspace:
                raise CredentialRefused(
                    f"the actor belongs to workspace {agent_ws}, the grant to {workspace}",
                    "invalid_client",
                )
            agent = self._agent(workspace, name)
            if agent.spiffe_id != spiffe_id:
                raise CredentialRefused(
                    f"{spiffe_id} is not the identity of agent {name} ({agent.spiffe_id})",
                    "invalid_client",
                )
            key = verification_key(self.store, workspace, name, kid, now)
            if key is None:
                raise CredentialRefused(
                    f"agent {name} has no usable key {kid} (unknown, retired or revoked)",
                    "invalid_client",
                )
            claims = verify_assertion(
                request.actor_token,
                key,
                audience=self.settings.issuer,
                now=now,
                skew=self.settings.skew,
            )
            replay = hashlib.sha256(f"assertion:{spiffe_id}:{claims.jti}".encode()).hexdigest()
            if not self.store.credentials.remember_once(
                replay, claims.exp + self.settings.skew, now
            ):
                raise CredentialRefused(
                    "the actor assertion was already used (replay)", "invalid_client"
                )
            return agent, dpop_jkt or kid
        if request.actor_token_type == JWT_SVID_TOKEN_TYPE:
            spiffe_id = verify_jwt_svid(
                request.actor_token,
                audience=self.settings.issuer,
                bundles=self.store.credentials.trust_bundles(workspace),
            )
            mapped = self.store.credentials.identity(workspace, spiffe_id)
            if mapped is None:
                raise CredentialRefused(
                    f"{spiffe_id} is not mapped to an agent of workspace {workspace}",
                    "invalid_client",
                )
            if dpop_jkt is None:
                raise CredentialRefused(
                    "a JWT-SVID actor must send a DPoP proof: the token is bound to its key",
                    "invalid_dpop_proof",
                )
            return self._agent(workspace, mapped), dpop_jkt
        raise CredentialRefused(
            f"actor_token_type must be {JWT_TOKEN_TYPE} or {JWT_SVID_TOKEN_TYPE}",
            "invalid_request",
        )

    def _agent(self, workspace: str, name: str) -> Agent:
        agent = self.store.agent(workspace, name)
        if agent is None:
            raise CredentialRefused(
                f"agent {name} is not registered in workspace {workspace}", "invalid_client"
            )
        if agent.status is not AgentStatus.ACTIVE:
            raise CredentialRefused(f"agent {name} is {agent.status.value}", "invalid_client")
        return agent

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
        self.revocations.revoke(
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
        self.revocations.revoke(
            Revoked.TASK,
            task.workspace,
            task_id,
            reason=status.value,
            expires_at=task.expires_at + self.settings.skew,
        )
        return tree

    def revoke_grant(self, grant_id: str, *, reason: str = "revoked by the user") -> None:
        grant = self.store.credentials.grant(grant_id)
        if grant is None:
            raise NotFound(f"no grant {grant_id!r}")
        self.store.credentials.revoke_grant(grant_id, self._clock())
        self.revocations.revoke(Revoked.GRANT, grant.workspace, grant_id, reason=reason)

    def revoke_agent(self, workspace: str, agent: str, *, reason: str = "suspended") -> list[str]:
        """Refuse every token the agent holds now and end its open tasks; returns their ids."""
        now = self._clock()
        ended = self.store.open_tasks(workspace, agent=agent)
        for task_id in ended:
            self.store.finish_task(task_id, TaskStatus.REVOKED, now)
        self.revocations.revoke(Revoked.AGENT, workspace, agent, reason=reason)
        return ended

    def revoke_workspace(self, workspace: str, *, reason: str = "revoked") -> list[str]:
        now = self._clock()
        ended = self.store.open_tasks(workspace)
        for task_id in ended:
            self.store.finish_task(task_id, TaskStatus.REVOKED, now)
        self.revocations.revoke(Revoked.WORKSPACE, workspace, workspace, reason=reason)
        return ended

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
