"""What the store keeps for the console: password accounts and signed-in sessions."""

from __future__ import annotations

import msgspec
import sqlalchemy as sa

from tether.store import tables as t
from tether.store.rows import row_to


class ConsoleAccount(msgspec.Struct, frozen=True):
    name: str
    password_hash: str  # Argon2id, in its own encoded form
    roles: dict[str, list[str]]  # workspace (or "*") -> roles
    created_at: float
    disabled_at: float | None = None


class ConsoleSession(msgspec.Struct, frozen=True):
    digest: str  # SHA-256 of the cookie's secret, hex
    kind: str  # "token" or "password"
    subject: str  # the admin token's id, or the account's name
    csrf: str  # the token every form of this session carries
    created_at: float
    expires_at: float


class ConsoleRecords:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def put_account(self, account: ConsoleAccount) -> None:
        """Add the account, or replace the one of that name (a new password or roles)."""
        accounts = t.console_accounts
        with self.engine.begin() as db:
            db.execute(accounts.delete().where(accounts.c.name == account.name))
            db.execute(accounts.insert().values(**msgspec.to_builtins(account)))

    def account(self, name: str) -> ConsoleAccount | None:
        query = sa.select(t.console_accounts).where(t.console_accounts.c.name == name)
        with self.engine.connect() as db:
            row = db.execute(query).first()
        return row_to(ConsoleAccount, row) if row else None

    def add_session(self, session: ConsoleSession) -> None:
        with self.engine.begin() as db:
            db.execute(t.console_sessions.insert().values(**msgspec.to_builtins(session)))

    def session(self, digest: str) -> ConsoleSession | None:
        query = sa.select(t.console_sessions).where(t.console_sessions.c.digest == digest)
        with self.engine.connect() as db:
            row = db.execute(query).first()
        return row_to(ConsoleSession, row) if row else None

    def end_session(self, digest: str) -> None:
        sessions = t.console_sessions
        with self.engine.begin() as db:
            db.execute(sessions.delete().where(sessions.c.digest == digest))

    def disable_account(self, name: str, at: float) -> None:
        accounts = t.console_accounts
        query = (
            accounts.update()
            .where(accounts.c.name == name, accounts.c.disabled_at.is_(None))
            .values(disabled_at=at)
        )
        with self.engine.begin() as db:
            db.execute(query)

    def end_sessions_of(self, kind: str, subject: str) -> None:
        """End every session opened with this token id or account name."""
        sessions = t.console_sessions
        with self.engine.begin() as db:
            db.execute(
                sessions.delete().where(sessions.c.kind == kind, sessions.c.subject == subject)
            )

    def end_expired(self, now: float) -> None:
        sessions = t.console_sessions
        with self.engine.begin() as db:
            db.execute(sessions.delete().where(sessions.c.expires_at <= now))
