"""SQL that SQLAlchemy spells differently per dialect: the one place that knows them."""

from __future__ import annotations

import importlib

from sqlalchemy import Result
from sqlalchemy.orm import Session

DIALECTS = ("postgresql", "sqlite")  # the ones pkiq runs on, each with ON CONFLICT DO NOTHING


def _insert(dialect: str):
    """The dialect's own ``insert`` construct, imported when first needed: a command that
    runs on SQLite never pays for loading PostgreSQL's dialect, and none pays at import."""
    if dialect not in DIALECTS:
        raise ValueError(f"pkiq runs on {' or '.join(DIALECTS)}, not {dialect}")
    return importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert


class InsertIgnoringConflicts:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING <columns>`` on ``table``, built once per
    dialect (Core, not the ORM unit of work: cheap enough for hot paths). A row another
    transaction or process inserted first is skipped, and the transaction stays usable (a
    failed INSERT aborts it on PostgreSQL); RETURNING tells which rows were inserted
    (rowcount does not: psycopg reports -1 for this statement through SQLAlchemy)."""

    def __init__(self, table, *returning):
        self._table, self._returning = table, returning
        self._statements: dict = {}

    def execute(self, session: Session, rows: dict | list[dict]) -> Result:
        """Insert one row (a dict) or many (a list, one statement); the result holds the
        ``returning`` columns of the rows inserted."""
        connection = session.connection()
        dialect = connection.dialect.name
        if dialect not in self._statements:
            self._statements[dialect] = _insert(dialect)(self._table).on_conflict_do_nothing(
            ).returning(*self._returning)
        return connection.execute(self._statements[dialect], rows)


def insert_or_ignore(session: Session, model, values: dict) -> bool:
    """Insert one row of ``model`` unless it conflicts: a row two processes may create at
    once is created once. True when this call inserted it."""
    table = model.__table__
    insert = InsertIgnoringConflicts(table, *table.primary_key.columns)
    return insert.execute(session, values).first() is not None
