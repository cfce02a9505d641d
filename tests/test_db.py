"""The database layer: migrations match the models, SQLite runs in WAL, real processes."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from ca.models import Base
from scheduler import models as scheduler_models

from .conftest import PASSPHRASE, make_csr


def test_migrations_produce_exactly_the_models(engine):
    # The scheduler's tables are on the same Base, registered by importing scheduler.models
    # (done above): the migrations' env.py, in the shell layer, must not import it.
    assert {scheduler_models.Lease.__table__, scheduler_models.RefreshRun.__table__,
            scheduler_models.AlertState.__table__} <= set(Base.metadata.sorted_tables)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_is_wal_and_private(tmp_path):
    from shell.db import make_engine, migrate

    db = tmp_path / "sub" / "pkiq.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    assert db.stat().st_mode & 0o777 == 0o600


def _pkiq(env, *args):
    return subprocess.run([sys.executable, "-m", "pkiq", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_signers_in_separate_processes_never_share_a_serial(db_url, tmp_path):
    """Four OS processes (as four hosts would) sign against one database at once."""
    env = {**os.environ, "PKIQ_DATABASE_URL": db_url, "PKIQ_CA_PASSPHRASE": PASSPHRASE,
           "PKIQ_DATA_DIR": str(tmp_path)}
    created = _pkiq(env, "ca", "create", "Root", "--subject", "/CN=Root", "--key-type",
                    "ec-p256", "--serial-mode", "sequential")
    assert created.returncode == 0, created.stderr
    csrs = []
    for i in range(12):
        path = tmp_path / f"r{i}.pem"
        path.write_bytes(make_csr(f"h{i}.example.com"))
        csrs.append(path)

    def run(batch: list[Path]) -> list[str]:
        serials = []
        for path in batch:
            done = _pkiq(env, "ca", "sign", "Root", path, "--json")
            assert done.returncode == 0, done.stderr
            serials.append(json.loads(done.stdout)["serial"])
        return serials

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, [csrs[i::4] for i in range(4)]))
    serials = sorted(int(s, 16) for batch in results for s in batch)
    assert serials == list(range(1, 13))
    crls = [_pkiq(env, "ca", "gencrl", "Root", "--json") for _ in range(2)]
    assert [json.loads(c.stdout)["crl_number"] for c in crls] == [1, 2]


def test_postgres_schema_is_isolated_per_test(engine):
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from certificate_authorities")).scalar() == 0


def test_schema_head_names_the_newest_migration(engine):
    """migrate() compares against SCHEMA_HEAD without importing Alembic: keep them equal."""
    from alembic.script import ScriptDirectory

    from shell.db import SCHEMA_HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config(engine)).get_current_head() == SCHEMA_HEAD
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == SCHEMA_HEAD


def test_the_embedded_database_keeps_its_file_name(tmp_path):
    """An upgraded pkiq must find the CA database an earlier one made: data_dir/pkiq.db."""
    from shell.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url=None)
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'pkiq.db'}"


def test_insert_ignoring_conflicts_on_each_dialect(sessions):
    """ca.sql is the one place that knows the dialects' INSERT ... ON CONFLICT DO NOTHING."""
    from ca.sql import InsertIgnoringConflicts, insert_or_ignore
    from scheduler.models import Lease
    from shell.db import transaction

    insert = InsertIgnoringConflicts(Lease.__table__, Lease.__table__.c.name)
    with transaction(sessions) as session:
        assert insert_or_ignore(session, Lease, dict(name="a"))
        assert not insert_or_ignore(session, Lease, dict(name="a"))
        rows = insert.execute(session, [dict(name=n) for n in ("a", "b", "c")]).all()
        assert sorted(name for (name,) in rows) == ["b", "c"]
        assert insert.execute(session, dict(name="b")).first() is None


WRITER = """
import sys
from sqlalchemy import text
from shell.db import make_engine
engine = make_engine(sys.argv[1])
with engine.begin() as conn:
    conn.execute(text("insert into t values (:v)"), {"v": sys.argv[2]})
engine.dispose()
"""


def test_a_second_engine_keeps_the_process_locks_on_a_sqlite_file(tmp_path):
    """A worker makes two engines on one file (signing, then pushes). Opening the second
    must not drop the POSIX locks the first holds (closing any descriptor of the file
    would): else a command that exits takes itself for the last user, removes the WAL, and
    this process's later commits go to a deleted file, seen by nobody."""
    from shell.db import make_engine, migrate

    url = f"sqlite:///{tmp_path / 'x.db'}"
    first = make_engine(url)
    migrate(first)
    with first.begin() as conn:
        conn.execute(text("create table t (v text)"))
    held = first.connect()  # a pooled connection stays open, as in a worker
    held.execute(text("select count(*) from t")).all()
    held.rollback()  # no transaction, the connection (and its file locks) kept
    second = make_engine(url)
    migrate(second)
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", WRITER, url, "other"], check=True, cwd=root)
    assert (tmp_path / "x.db-wal").exists()  # the exiting command knew it was not alone
    with second.begin() as conn:
        conn.execute(text("insert into t values ('mine')"))
    subprocess.run([sys.executable, "-c", WRITER, url, "later"], check=True, cwd=root)
    held.close()
    first.dispose()
    second.dispose()
    fresh = make_engine(url)
    with fresh.connect() as conn:
        assert sorted(r[0] for r in conn.execute(text("select v from t"))) == [
            "later", "mine", "other"]
    fresh.dispose()


def test_a_context_makes_one_engine_when_first_used_from_threads(db_url, tmp_path):
    """A web app's first requests arrive together: one engine, not one per thread (the
    others would never be disposed, and their connections leak)."""
    import threading

    from service import ServiceContext
    from shell.settings import Settings

    ctx = ServiceContext(Settings(data_dir=tmp_path / "data", database_url=db_url))
    start = threading.Barrier(6)
    seen = []

    def first_use():
        start.wait()
        seen.append(ctx.sessions)
    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(factory) for factory in seen}) == 1
    ctx.close()


def test_a_postgres_host_that_never_answers_fails_in_seconds():
    """A listener that takes the connection and never speaks (as a firewall dropping the
    answers would look): the command fails after the connect timeout, in one line."""
    import socket
    import time

    import pytest

    from shell.db import DatabaseUnavailable, make_engine, migrate

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        engine = make_engine(f"postgresql://nobody@127.0.0.1:{port}/x")  # the default: 10 s
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="cannot reach the database"):
            migrate(engine)
        assert 9 < time.monotonic() - started < 20
        engine.dispose()
