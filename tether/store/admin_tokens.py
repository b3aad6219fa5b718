"""What the store keeps of admin tokens: their hashes, whose they are, their roles."""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa

from tether.store import tables as t
from tether.store.rows import row_to


class AdminTokenRecord(msgspec.Struct, frozen=True):
    id: str
    digest: str  # SHA-256 of the token, hex
    name: str
    roles: dict[str, list[str]]  # workspace (or "*") -> roles
    created_at: float
    expires_at: float
    revoked_at: float | None = None


class AdminTokenRecords:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add(self, record: AdminTokenRecord) -> None:
        with self.engine.begin() as db:
            db.execute(t.admin_tokens.insert().values(**msgspec.to_builtins(record)))

    def by_digest(self, digest: str) -> AdminTokenRecord | None:
        query = sa.select(t.admin_tokens).where(t.admin_tokens.c.digest == digest)
        with self.engine.connect() as db:
            row = db.execute(query).first()
        return row_to(AdminTokenRecord, row) if row else None

    def by_id(self, token_id: str) -> AdminTokenRecord | None:
        query = sa.select(t.admin_tokens).where(t.admin_tokens.c.id == token_id)
        with self.engine.connect() as db:
            row = db.execute(query).first()
        return row_to(AdminTokenRecord, row) if row else None

    def all(self) -> list[AdminTokenRecord]:
        query = sa.select(t.admin_tokens).order_by(t.admin_tokens.c.created_at)
        with self.engine.connect() as db:
            return [row_to(AdminTokenRecord, r) for r in db.execute(query)]

    def revoke(self, token_id: str, at: float) -> bool:
        query = (
            t.admin_tokens.update()
            .where(t.admin_tokens.c.id == token_id, t.admin_tokens.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        with self.engine.begin() as db:
            changed: Any = db.execute(query)
        return bool(changed.rowcount)
