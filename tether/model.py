"""The nouns of Tether (DESIGN.md section 1) as plain typed records.

These are values: they cross module boundaries, go into the store and out through interfaces.
Behaviour lives in the module that owns each concept; compiled, fast-path forms (parsed policies,
schema validators) live beside the code that uses them, never here.
"""

from __future__ import annotations

import os
import time
from enum import StrEnum
from typing import Any, Protocol

import msgspec


class Effect(StrEnum):
    """What a decision says about a call."""

    ALLOW = "allow"
    DENY = "deny"
    APPROVAL_REQUIRED = "approval_required"


class Stage(StrEnum):
    """The pipeline stages (DESIGN.md section 2), named in every deny a stage produces."""

    AUTHENTICATE = "authenticate"
    WORKSPACE = "workspace"
    TASK = "task"
    CONTEXT = "context"
    POLICY = "policy"
    APPROVAL = "approval"
    RECORD = "record"
    ANSWER = "answer"


class AgentStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class TaskStatus(StrEnum):
    OPEN = "open"
    ENDED = "ended"
    EXPIRED = "expired"
    REVOKED = "revoked"


class OutputTrust(StrEnum):
    """Whether a tool's output is content the user vouches for, or third-party content."""

    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"


class Tenant(msgspec.Struct, frozen=True):
    name: str
    created_at: float


class Workspace(msgspec.Struct, frozen=True):
    name: str
    tenant: str
    trust_domain: str
    created_at: float
    revision: int = 0
    active_policy_version: str | None = None
    settings: dict[str, Any] = msgspec.field(default_factory=dict)  # e.g. working_hours
    shadow_policy_version: str | None = None  # a candidate evaluated beside, never enforced


class Agent(msgspec.Struct, frozen=True):
    """`ceiling`: the most tools this agent may ever hold in a credential (None: any tool of the
    catalogue); every token exchange intersects with it, whoever delegates."""

    workspace: str
    name: str
    kind: str
    owner: str
    spiffe_id: str
    status: AgentStatus = AgentStatus.ACTIVE
    created_at: float = 0.0
    ceiling: tuple[str, ...] | None = None


class KeyStatus(StrEnum):
    """An agent key signs while active; while retiring it still verifies (rotation overlap)."""

    ACTIVE = "active"
    RETIRING = "retiring"
    REVOKED = "revoked"


class AgentKey(msgspec.Struct, frozen=True):
    """A public key an agent proves its identity with. `kid` is its RFC 7638 thumbprint."""

    workspace: str
    agent: str
    kid: str
    jwk: dict[str, Any]
    status: KeyStatus
    created_at: float
    retire_at: float | None = None  # a retiring key stops verifying then


class Grant(msgspec.Struct, frozen=True):
    """A user's delegation: `agent` may act for `user` in `workspace` with at most `tools`, in
    tasks that last at most `max_ttl` seconds, until `expires_at`; `may_act` names the agents it
    may delegate further to (a sub-agent's hop is refused unless named here)."""

    id: str
    workspace: str
    user: str
    agent: str
    tools: tuple[str, ...]
    max_ttl: float
    may_act: tuple[str, ...]
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    source: str = "api"  # "file": declared by the workspace's workspace.yaml, kept in step with it


class User(msgspec.Struct, frozen=True):
    workspace: str
    name: str
    roles: tuple[str, ...] = ()


MAX_RISK_TIER = 16  # characters of a tool's risk tier: what the store keeps


class Tool(msgspec.Struct, frozen=True):
    """One entry of a workspace's tool catalogue."""

    workspace: str
    name: str
    args_schema: dict[str, Any]
    effects: tuple[str, ...]
    sinks: tuple[str, ...] = ()
    output: OutputTrust = OutputTrust.TRUSTED
    labels: tuple[str, ...] = ()
    risk_tier: str = "low"
    description: str = ""


class Task(msgspec.Struct, frozen=True):
    """One unit of delegated work: who acts, for whom, asked what, with which tools, until when."""

    id: str
    workspace: str
    agent: str
    user: str
    request: str
    tools: tuple[str, ...]
    created_at: float
    expires_at: float
    status: TaskStatus = TaskStatus.OPEN
    grant: str | None = None  # the delegation grant it was issued under
    parent: str | None = None  # the task that delegated it, for a sub-agent's task


class TaskSummary(msgspec.Struct, frozen=True):
    """What a task has done so far, as its agent may read it: the task, its status, how many
    calls it made, was allowed, was denied, reported (`executed`), made outside its workspace,
    the labels it acquired, and its allowed calls by tool and by effect. A remote Guard's
    `task.state`; an embedded Guard's is the live state itself (tether/session)."""

    task: Task
    status: TaskStatus
    calls: int
    allowed: int
    denied: int
    executed: int
    outside_workspace: int
    labels: frozenset[str]
    calls_by_tool: dict[str, int]
    calls_by_effect: dict[str, int]

    @property
    def id(self) -> str:
        return self.task.id


class PolicyBundleRecord(msgspec.Struct, frozen=True):
    """A stored policy bundle: its files, the Cedar schema it was validated against, its version."""

    workspace: str
    version: str
    files: dict[str, str]
    cedar_schema: dict[str, Any]
    created_at: float


class ApprovalStatus(StrEnum):
    """A request waits (`pending`) until a person approves or denies it, it expires, or its agent
    is suspended (`cancelled`); an approved request is a grant until its one call `used` it."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    USED = "used"


class ApprovalRequest(msgspec.Struct, frozen=True):
    """A step-up request, bound to one exact call: this tool, these arguments (RFC 8785 canonical
    JSON, and their hash with the tool and task), in this task."""

    id: str
    workspace: str
    task_id: str
    agent: str
    user: str  # whom the agent acts for
    tool: str
    effects: tuple[str, ...]
    args: str  # canonical JSON
    call_hash: str
    reasons: tuple[str, ...]
    policies: tuple[str, ...]
    approver_roles: tuple[str, ...]
    decision_id: str  # the approval_required decision that asked
    status: ApprovalStatus
    created_at: float
    expires_at: float
    decided_by: str | None = None
    decided_at: float | None = None
    comment: str | None = None
    used_by: str | None = None  # the decision that used the grant


class ApprovalEvent(msgspec.Struct, frozen=True):
    """One step of a request's life, for audit: requested, notified, approved, denied, expired,
    cancelled, used (and notify_failed)."""

    approval_id: str
    workspace: str
    event: str
    actor: str
    at: float
    detail: str = ""


class Reason(msgspec.Struct, frozen=True):
    """Why a decision came out as it did: the stage that decided and, for policies, which one."""

    stage: Stage
    text: str
    policy: str | None = None

    def __str__(self) -> str:
        return self.text


class Decision(msgspec.Struct, frozen=True):
    """The answer to one call. `reasons` explain it; `decision_id` finds its record."""

    decision_id: str
    effect: Effect
    reasons: tuple[Reason, ...]
    policy_version: str | None
    workspace: str | None
    agent: str | None
    task_id: str | None
    tool: str
    approval_id: str | None = None
    approver_roles: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @property
    def reason(self) -> str:
        """All reasons as one line, for logs and error messages."""
        return "; ".join(r.text for r in self.reasons)


def new_id(prefix: str) -> str:
    """A time-ordered, collision-resistant id: 48-bit millisecond time then 80 random bits, in hex.

    Time order keeps the store's unique indexes append-mostly, which keeps the decision insert
    cheap; the prefix tells a person what kind of thing an id names.
    """
    return f"{prefix}{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


class DecisionRecord(msgspec.Struct, frozen=True):
    """What the store keeps of one decision: enough to explain it and to replay it.

    `context` is the exact JSON the policies saw, so a backtest can re-decide the call against
    another bundle; `args_digest` lets a record be kept even where the arguments are redacted.
    """

    id: str
    ts: float
    tenant: str | None
    workspace: str | None
    agent: str | None
    user: str | None
    task_id: str | None
    tool: str
    args_digest: str
    args: str  # JSON
    effect: Effect
    stage: Stage
    reasons: str  # JSON list of Reason
    policy_version: str | None
    context: str | None  # JSON, the context the policies saw
    shadow: str | None  # JSON of the shadow outcome, when shadow policies applied
    approval_id: str | None = None
    # The hash chain (tether/audit/chain.py): the writer's chain, the record's place in it, the
    # hash of the record before it and of this one.
    chain: str | None = None
    chain_seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


class AuditEvent(msgspec.Struct, frozen=True):
    """Something a person, agent or service did that is not a decision but is evidence too: an
    approval granted or refused, a credential issued or revoked, a grant or key changed. Kept in
    the audit log beside the decisions and chained the same way.

    `kind` is `<concept>.<what happened>` (e.g. `approval.approved`, `credential.revoked`);
    `actor` who did it; `subject` what it was done to (an approval, token, task, grant or agent
    id); `detail` the rest, as JSON.
    """

    id: str
    ts: float
    kind: str
    tenant: str | None
    workspace: str | None
    actor: str | None
    subject: str | None
    detail: str  # JSON
    chain: str | None = None
    chain_seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


class Durability(StrEnum):
    """When a decision's record is safe, relative to its answer (docs/audit.md).

    `commit`: committed before the answer, so a killed process loses nothing it answered.
    `fsync`: also on disk before the answer, so power loss loses nothing either.
    `async`: answered first, committed within a bounded window; a crash may lose that window.
    """

    COMMIT = "commit"
    FSYNC = "fsync"
    ASYNC = "async"


class EventSink(Protocol):
    """Where a component records what it did for the audit log (`AuditLog.event`)."""

    def __call__(
        self,
        kind: str,
        *,
        workspace: str | None,
        actor: str | None,
        subject: str | None,
        **detail: Any,
    ) -> None: ...


def no_events(kind: str, **_: Any) -> None:
    """The sink of a component used on its own, outside a Guard (a unit test, a tool)."""
