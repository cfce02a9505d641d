"""migrate() from many processes at once: two hosts starting together, or the first
``docker compose up``, must all come up on one schema at head, on an empty or an old database."""

import pytest
from alembic import command
from sqlalchemy import inspect

from pkiq.db import alembic_config, make_engine


def test_an_upgrade_commits_or_rolls_back_with_the_callers_transaction(db_url):
    """What the lock relies on: given a connection, Alembic runs every migration inside the
    caller's transaction (SQLite's BEGIN IMMEDIATE, or PostgreSQL's with its advisory lock),
    DDL included, and commits nothing of its own."""
    engine = make_engine(db_url)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        command.upgrade(alembic_config(engine, conn), "head")
        assert inspect(conn).has_table("signing_jobs")
        raise RuntimeError("abandon the upgrade")
    assert inspect(engine).get_table_names() == []
    engine.dispose()
