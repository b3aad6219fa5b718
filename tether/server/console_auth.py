"""Who is at the console: people sign in with an admin token or a name and password, and get a
session cookie; every form they send carries the session's CSRF token.

- Passwords are kept as Argon2id hashes (argon2-cffi's defaults, the RFC 9106 choice). An
  unknown name costs the same hash as a wrong password, so timing does not say which names
  exist.
- The cookie holds 32 random bytes; the store keeps only their SHA-256, so a copy of the
  database opens no session. It is HttpOnly, SameSite=Strict, and Secure when the console is
  served over HTTPS.
- A session remembers what it was opened with (the admin token's id, or the account's name) and
  reads its roles from there on every request: revoking the token or disabling the account
  ends the session at once, and a change of roles applies at the next click. A new password
  ends the account's sessions (a stolen cookie dies with the old password).
- CSRF: the synchronizer-token pattern (a random token per session, in every form and in htmx's
  requests, compared in constant time), on top of SameSite=Strict. The sign-in form, before any
  session exists, uses a double-submit cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tether.errors import CredentialRefused, InvalidInput, NotFound
from tether.server import admin_tokens
from tether.store import Store
from tether.store.console import ConsoleAccount, ConsoleSession

COOKIE = "tether_console"
SIGN_IN_COOKIE = "tether_console_signin"  # the sign-in form's double-submit CSRF token
SESSION_SECONDS = 8 * 3600.0
MIN_PASSWORD = 12
_hasher = PasswordHasher()
_UNKNOWN = _hasher.hash(secrets.token_urlsafe(16))  # verified against for names not known
# Each verification takes 64 MiB and most of a core for a while: a burst of sign-ins waits its
# turn rather than taking the machine.
_hashing = threading.BoundedSemaphore(2)


@dataclass(frozen=True)
class Person:
    """Someone signed in: their name (what approvals they make are recorded as), their roles
    per workspace now, and their session's CSRF token."""

    name: str
    roles: Mapping[str, list[str]]
    csrf: str
    kind: str  # signed in with a "token" or a "password"

    def can(self, workspace: str, *roles: str) -> bool:
        """Holds one of `roles` (or admin) in the workspace."""
        return any(admin_tokens.holds(self.roles, workspace, role) for role in roles)

    def workspaces(self, known: list[str]) -> list[str]:
        """The workspaces among `known` where they hold some role."""
        if self.roles.get(admin_tokens.EVERY_WORKSPACE):
            return known
        return [w for w in known if self.roles.get(w)]


def add_account(
    store: Store, name: str, password: str, roles: Mapping[str, list[str]], now: float
) -> ConsoleAccount:
    """Add a console account, or replace its password and roles."""
    if not name.strip() or name != name.strip() or len(name) > 255:
        raise InvalidInput("an account's name is a user's name, without surrounding spaces")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a console password has at least {MIN_PASSWORD} characters")
    admin_tokens.check_roles(roles, holder="a console account")
    account = ConsoleAccount(
        name=name,
        password_hash=_hasher.hash(password),
        roles={w: sorted(set(r)) for w, r in roles.items()},
        created_at=now,
    )
    store.console.put_account(account)
    store.console.end_sessions_of("password", name)
    return account


def disable_account(store: Store, name: str, now: float) -> None:
    """The account can no longer sign in, and its sessions end now; `add_account` with a new
    password enables it again."""
    if store.console.account(name) is None:
        raise NotFound(f"no console account {name!r}")
    store.console.disable_account(name, now)
    store.console.end_sessions_of("password", name)


def sign_in_with_password(store: Store, name: str, password: str, now: float) -> str:
    """A new session's cookie secret; CredentialRefused (one reason for every failure)."""
    account = store.console.account(name)
    try:
        with _hashing:
            _hasher.verify(account.password_hash if account else _UNKNOWN, password)
    except (VerificationError, InvalidHashError):
        account = None
    if account is None or account.disabled_at is not None:
        raise CredentialRefused("the name or the password is not right")
    return _open(store, "password", account.name, now)


def sign_in_with_token(store: Store, token: str, now: float) -> str:
    """A new session's cookie secret, for the holder of a live admin token."""
    record = admin_tokens.authenticate(store, token.strip(), now)
    return _open(store, "token", record.id, now)


def _open(store: Store, kind: str, subject: str, now: float) -> str:
    secret = secrets.token_urlsafe(32)
    store.console.end_expired(now)
    store.console.add_session(
        ConsoleSession(
            digest=_digest(secret),
            kind=kind,
            subject=subject,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + SESSION_SECONDS,
        )
    )
    return secret


def person(store: Store, secret: str | None, now: float) -> Person | None:
    """Who holds this cookie, with their roles as they are now; None if no one (no session,
    expired, or what it was opened with is revoked, expired or disabled)."""
    if not secret:
        return None
    session = store.console.session(_digest(secret))
    if session is None or now >= session.expires_at:
        return None
    if session.kind == "token":
        record = store.admin_tokens.by_id(session.subject)
        if record is None or record.revoked_at is not None or now >= record.expires_at:
            return None
        return Person(record.name, record.roles, session.csrf, session.kind)
    account = store.console.account(session.subject)
    if account is None or account.disabled_at is not None:
        return None
    return Person(account.name, account.roles, session.csrf, session.kind)


def sign_out(store: Store, secret: str | None) -> None:
    if secret:
        store.console.end_session(_digest(secret))


def same_token(expected: str, submitted: str | None) -> bool:
    """A CSRF token matches, compared in constant time; a missing one never does (compared as
    UTF-8 bytes: `compare_digest` refuses non-ASCII text, and any text may be submitted)."""
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "surrogatepass"))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


__all__ = [
    "COOKIE",
    "SESSION_SECONDS",
    "SIGN_IN_COOKIE",
    "Person",
    "add_account",
    "disable_account",
    "new_token",
    "person",
    "same_token",
    "sign_in_with_password",
    "sign_in_with_token",
    "sign_out",
]
