"""Alembic environment: the engine comes from shell.db (never from a URL in an ini file).
Given a connection (shell.db.migrate passes the one holding its migration lock), the
migrations run on it inside the caller's transaction, which the caller commits: Alembic
begins no transaction of its own on a connection already in one (MigrationContext.
begin_transaction returns a no-op then, SQLite included; tests/test_migrate_concurrency.py
holds it to that)."""

from alembic import context

from ca.models import Base

# Base.metadata holds the domain's tables only: the scheduler's (leases, refresh runs, alert
# states) join it when scheduler.models is imported, which this layer must not do. Migrations
# are written by hand; to autogenerate one, import scheduler.models first, or Alembic would
# propose dropping those tables (tests/test_db.py compares the migrations with both).

config = context.config


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    context.run_migrations()


if (given := config.attributes.get("connection")) is not None:
    run_migrations(given)
else:
    with config.attributes["engine"].begin() as connection:
        run_migrations(connection)
