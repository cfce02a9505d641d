"""Seeing cheaply that another process committed to the database.

SQLite counts the commits of other connections (``PRAGMA data_version``, kept in shared
memory in WAL mode): asking costs microseconds and no table read, so it can be asked on every
request. PostgreSQL has no such counter a client reads without a round trip; there the
caller reads what it needs (``None`` here)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

from sqlalchemy.engine import Engine


def commit_counter(engine: Engine) -> Callable[[], int] | None:
    """A function that returns a number that changes whenever any other connection has
    committed since it last returned, for a SQLite file; None for any other database.

    It holds one connection of its own in autocommit mode (no read transaction stays open
    to hold back WAL checkpoints), guarded by a lock so that threads may share it; the
    function's ``close()`` closes it."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    conn = sqlite3.connect(engine.url.database, check_same_thread=False, isolation_level=None)
    lock = threading.Lock()

    def counter() -> int:
        with lock:
            return conn.execute("PRAGMA data_version").fetchone()[0]

    counter.close = conn.close  # for the owner's shutdown
    return counter
