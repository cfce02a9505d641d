"""migrate() from many processes at once: two hosts starting together, or the first
``docker compose up``, must all come up on one schema at head, on an empty or an old database."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from ca.models import Base, CertificateAuthority
from pkiq.db import (
    SCHEMA_HEAD,
    DatabaseUnavailable,
    alembic_config,
    make_engine,
    migrate,
    session_factory,
)

from .domain import new_ca

PROCESSES = 8

# Each child builds its engine, says it is ready, then waits for the go file: the parent
# creates it once every child is ready, so all of them call migrate() within a few
# milliseconds, instead of being spread over the ~0.5 s a Python process takes to start.
CHILD = """
import os, sys, time
from pathlib import Path
from pkiq.db import make_engine, migrate
folder = Path(sys.argv[1])
engine = make_engine(os.environ["PKIQ_DATABASE_URL"])
(folder / f"ready-{os.getpid()}").touch()
while not (folder / "go").exists():
    time.sleep(0.0005)
migrate(engine)
"""


def _migrate_together(db_url: str, tmp_path: Path, n: int = PROCESSES) -> list[str]:
    """Start n processes, release them at once; return the stderr of those that failed."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PKIQ_DATABASE_URL": db_url, "PKIQ_DATA_DIR": str(tmp_path / "data")}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(barrier)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    try:
        deadline = time.monotonic() + 60
        while len(list(barrier.glob("ready-*"))) < n:
            assert time.monotonic() < deadline, "the child processes never got ready"
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1]
            time.sleep(0.01)
        (barrier / "go").touch()
        outcomes = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [_error_line(err) for p, (_out, err) in zip(procs, outcomes, strict=True)
            if p.returncode != 0]


def _error_line(stderr: str) -> str:
    """The exception line of a traceback (SQLAlchemy appends a 'Background' link after it)."""
    lines = stderr.strip().splitlines() or ["(no stderr)"]
    exception = re.compile(r"([a-z_]+\.)+\w+: |\w+(Error|Exception): ")
    return next((line for line in reversed(lines) if exception.match(line)), lines[-1])


@pytest.fixture
def bare_engine(db_url):
    """An engine on the test's database, not migrated; disposed even when the test fails (a
    psycopg connection left to the garbage collector fails whichever test runs next)."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _assert_at_head(engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == SCHEMA_HEAD
        assert compare_metadata(context, Base.metadata) == []


def test_processes_starting_together_create_the_schema_once(db_url, bare_engine, tmp_path):
    failures = _migrate_together(db_url, tmp_path)
    assert failures == []
    _assert_at_head(bare_engine)


def test_processes_starting_together_upgrade_an_old_database(db_url, bare_engine, tmp_path,
                                                              clock):
    engine = bare_engine
    command.upgrade(alembic_config(engine), "0002")
    new_ca(session_factory(engine), clock, "Old")
    failures = _migrate_together(db_url, tmp_path)
    assert failures == []
    _assert_at_head(engine)
    with engine.connect() as conn:
        assert conn.execute(select(CertificateAuthority.name)).scalars().all() == ["Old"]


def test_an_upgrade_commits_or_rolls_back_with_the_callers_transaction(bare_engine):
    """What the lock relies on: given a connection, Alembic runs every migration inside the
    caller's transaction (SQLite's BEGIN IMMEDIATE, or PostgreSQL's with its advisory lock),
    DDL included, and commits nothing of its own."""
    engine = bare_engine
    with pytest.raises(RuntimeError), engine.begin() as conn:
        command.upgrade(alembic_config(engine, conn), "head")
        assert inspect(conn).has_table("signing_jobs")
        raise RuntimeError("abandon the upgrade")
    assert inspect(engine).get_table_names() == []


def test_an_up_to_date_database_needs_neither_lock_nor_alembic(db_url, bare_engine):
    migrate(bare_engine)
    probe = ("import os, sys; from pkiq.db import make_engine, migrate; "
             "migrate(make_engine(os.environ['PKIQ_DATABASE_URL'])); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PKIQ_DATABASE_URL": db_url}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_unreachable_database_is_still_unavailable():
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database"):
        migrate(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
