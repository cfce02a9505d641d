"""SQL that SQLAlchemy spells differently per dialect."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

_INSERTS = {"postgresql": pg_insert, "sqlite": sqlite_insert}


def insert_or_ignore(session: Session, model, values: dict) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING: a row two processes may create at once is created
    once, and the loser's transaction stays usable (a failed INSERT aborts it on PostgreSQL).
    True when this call inserted it."""
    connection = session.connection()
    insert = _INSERTS[connection.dialect.name]
    # RETURNING, not rowcount: psycopg reports -1 for this statement through SQLAlchemy.
    table = model.__table__
    statement = (insert(table).values(**values).on_conflict_do_nothing()
                 .returning(*table.primary_key.columns))
    return connection.execute(statement).first() is not None
