"""SQL that SQLAlchemy spells differently per dialect: the one place that knows them."""

from __future__ import annotations

from sqlalchemy import Result
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

_INSERTS = {"postgresql": pg_insert, "sqlite": sqlite_insert}


class InsertIgnoringConflicts:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING <columns>`` on ``table``, built once per
    dialect (Core, not the ORM unit of work: cheap enough for hot paths). A row another
    transaction or process inserted first is skipped, and the transaction stays usable (a
    failed INSERT aborts it on PostgreSQL); RETURNING tells which rows were inserted
    (rowcount does not: psycopg reports -1 for this statement through SQLAlchemy)."""

    def __init__(self, table, *returning):
        self._statements = {name: insert(table).on_conflict_do_nothing().returning(*returning)
                            for name, insert in _INSERTS.items()}

    def execute(self, session: Session, rows: dict | list[dict]) -> Result:
        """Insert one row (a dict) or many (a list, one statement); the result holds the
        ``returning`` columns of the rows inserted."""
        connection = session.connection()
        return connection.execute(self._statements[connection.dialect.name], rows)


def insert_or_ignore(session: Session, model, values: dict) -> bool:
    """Insert one row of ``model`` unless it conflicts: a row two processes may create at
    once is created once. True when this call inserted it."""
    table = model.__table__
    insert = InsertIgnoringConflicts(table, *table.primary_key.columns)
    return insert.execute(session, values).first() is not None
