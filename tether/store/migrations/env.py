"""Alembic environment: migrations run on the connection the store hands over."""

from __future__ import annotations

from alembic import context

from tether.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite alters tables by copying them; batch mode does that portably
)
with context.begin_transaction():
    context.run_migrations()
