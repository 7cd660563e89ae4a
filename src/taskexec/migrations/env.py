"""Alembic environment: runs on the connection ``taskexec.db.migrate`` hands in."""

from __future__ import annotations

from alembic import context

from taskexec.db import models

config = context.config
target_metadata = models.Base.metadata


def run_migrations_online() -> None:
    """Migrate on the connection given in ``config.attributes['connection']``."""
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `taskexec db upgrade`")
run_migrations_online()
