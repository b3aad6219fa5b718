"""Persistence behind one interface: `Store` (SQLAlchemy Core; SQLite by default).

Public names: `Store`, `StaleRevision`, `StoreClosed`, `WorkspaceSnapshot`, `Changes`,
`sqlite_url`, `DB_FILE`.
"""

from tether.store.store import DB_FILE, Changes, StaleRevision, Store, WorkspaceSnapshot, sqlite_url
from tether.store.writes import StoreClosed

__all__ = [
    "DB_FILE",
    "Changes",
    "StaleRevision",
    "Store",
    "StoreClosed",
    "WorkspaceSnapshot",
    "sqlite_url",
]
