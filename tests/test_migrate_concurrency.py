"""migrate() from many processes at once: two hosts starting together, or the first
``docker compose up``, must all come up on one schema at head, on an empty or an old database."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

import scheduler.models  # noqa: F401 - its tables join Base.metadata, compared below
from ca.models import Base, CertificateAuthority
from shell.db import (
    SCHEMA_HEAD,
    DatabaseUnavailable,
    alembic_config,
    make_engine,
    migrate,
    session_factory,
)

from .domain import new_ca

PROCESSES = 8
SQLITE_ROUNDS = 40

# Each child takes the databases in turn: it builds the engine, says it is ready, then waits
# for the round's go file, which the parent creates once every child is ready; so all of
# them call migrate() within a few milliseconds, not spread over the ~0.5 s a Python process
# takes to start. A failure is one line on stderr, and the child goes on to the next round.
CHILD = """
import os, sys, time
from pathlib import Path
from shell.db import make_engine, migrate
folder, urls = Path(sys.argv[1]), sys.argv[2:]
for i, url in enumerate(urls):
    engine = make_engine(url)
    (folder / f"ready-{i}-{os.getpid()}").touch()
    while not (folder / f"go-{i}").exists():
        time.sleep(0.0005)
    try:
        migrate(engine)
    except Exception as exc:
        print(f"round {i}: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
    engine.dispose()
"""


def _migrate_together(urls: list[str], tmp_path: Path, n: int = PROCESSES) -> list[str]:
    """Start n processes and release them into migrate() at once on each database in turn;
    return one line per process and round that failed."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data")}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(barrier), *urls], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    try:
        for i in range(len(urls)):
            deadline = time.monotonic() + 60
            while len(list(barrier.glob(f"ready-{i}-*"))) < n:
                assert time.monotonic() < deadline, "the child processes never got ready"
                dead = [p for p in procs if p.poll() is not None]
                assert not dead, dead[0].communicate()[1]
                time.sleep(0.005)
            (barrier / f"go-{i}").touch()
        errors = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * n, errors
    return [line for err in errors for line in err.splitlines() if line.startswith("round ")]


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
    failures = _migrate_together([db_url], tmp_path)
    assert failures == []
    _assert_at_head(bare_engine)


def test_fresh_sqlite_files_switch_to_wal_without_losing_a_process(tmp_path):
    """Every connection asks for WAL (shell.db._sqlite_setup); on a new file, processes doing
    that at the same moment can get "database is locked" at once. A rare race (without the
    lock file about 4 rounds in 100 lost a process, and this test failed 5 runs in 6), so
    many fresh files in a row."""
    urls = [f"sqlite:///{tmp_path / f'pkiq{i}.db'}" for i in range(SQLITE_ROUNDS)]
    assert _migrate_together(urls, tmp_path) == []
    for url in urls:
        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert MigrationContext.configure(conn).get_current_revision() == SCHEMA_HEAD
        engine.dispose()


def test_processes_starting_together_upgrade_an_old_database(db_url, bare_engine, tmp_path,
                                                              clock):
    engine = bare_engine
    command.upgrade(alembic_config(engine), "head")  # the models are head's: a CA first,
    new_ca(session_factory(engine), clock, "Old")
    command.downgrade(alembic_config(engine), "0002")  # then back to an old schema
    failures = _migrate_together([db_url], tmp_path)
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


def test_an_up_to_date_database_is_checked_without_importing_alembic(db_url, bare_engine):
    migrate(bare_engine)
    probe = ("import os, sys; from shell.db import make_engine, migrate; "
             "migrate(make_engine(os.environ['PKIQ_DATABASE_URL'])); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PKIQ_DATABASE_URL": db_url}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_unreachable_database_is_still_unavailable():
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database"):
        migrate(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
