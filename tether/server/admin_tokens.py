"""Admin tokens: how people and services (not agents) call the API.

A token is 32 random bytes, shown once when made; only its SHA-256 is stored, so a copy of the
database yields no usable token (the secret is long and random, so a slow hash adds nothing).
It belongs to a name (a user of the workspaces it covers: approvals made with it are that
user's) and holds roles per workspace, or in every workspace ("*"): `admin` (everything),
`policy-author`, `approver`, `auditor`. It expires, and can be revoked at once.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping

from tether.errors import CredentialRefused, Forbidden, InvalidInput
from tether.model import new_id
from tether.names import check_person
from tether.store import Store
from tether.store.admin_tokens import AdminTokenRecord

ROLES = ("admin", "policy-author", "approver", "auditor")
EVERY_WORKSPACE = "*"
PREFIX = "tether_at_"
MAX_LIFETIME = 366 * 86400.0


def issue(
    store: Store,
    *,
    name: str,
    roles: Mapping[str, list[str]],
    lifetime: float,
    now: float,
) -> tuple[str, AdminTokenRecord]:
    """A new token (returned once) and its record."""
    name = check_person("an admin token's holder", name)
    check_roles(roles, holder="an admin token")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise InvalidInput("an admin token lives between 0 and 366 days")
    token = PREFIX + secrets.token_urlsafe(32)
    record = AdminTokenRecord(
        id=new_id("adm_"),
        digest=digest(token),
        name=name,
        roles={w: sorted(set(r)) for w, r in roles.items()},
        created_at=now,
        expires_at=now + lifetime,
    )
    store.admin_tokens.add(record)
    return token, record


def check_roles(roles: Mapping[str, list[str]], *, holder: str) -> None:
    """Roles per workspace (or "*"), each one of ROLES, at least one somewhere."""
    if not roles:
        raise InvalidInput(f"{holder} holds at least one role in some workspace")
    for workspace, held in roles.items():
        unknown = sorted(set(held) - set(ROLES))
        if unknown or not held:
            raise InvalidInput(
                f"roles in {workspace!r}: {unknown or held} (use {', '.join(ROLES)})"
            )


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(store: Store, token: str, now: float) -> AdminTokenRecord:
    """The record of a live token; CredentialRefused otherwise (one reason for every way a
    token can be wrong, so a caller learns nothing about which tokens exist)."""
    record = store.admin_tokens.by_digest(digest(token)) if token.startswith(PREFIX) else None
    if record is None or record.revoked_at is not None or now >= record.expires_at:
        raise CredentialRefused("the admin token is not valid (unknown, expired or revoked)")
    return record


def holds_any(record: AdminTokenRecord, workspace: str) -> bool:
    """Whether the token holds some role in `workspace` (or in every workspace)."""
    return bool(record.roles.get(workspace) or record.roles.get(EVERY_WORKSPACE))


def holds(roles: Mapping[str, list[str]], workspace: str | None, role: str) -> bool:
    """Whether `roles` include `role` (or `admin`) in `workspace` (None: in every workspace)."""
    held = set(roles.get(EVERY_WORKSPACE, []))
    if workspace is not None:
        held |= set(roles.get(workspace, []))
    return role in held or "admin" in held


def require(record: AdminTokenRecord, workspace: str | None, role: str) -> None:
    """Forbidden unless the token holds `role` (or `admin`) in `workspace` (None: in every
    workspace, for what spans them)."""
    if not holds(record.roles, workspace, role):
        where = f"workspace {workspace}" if workspace is not None else "every workspace"
        raise Forbidden(f"this needs the {role} role in {where}")
