"""SQLite writers take turns on a lock file (``shell.db.WriterTurns``) before BEGIN
IMMEDIATE: held for exactly the write transaction, never by a reader, bounded by the busy
timeout, and not waited for by a thread that holds it already."""

import fcntl
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shell.db import WriterTurns, make_engine, read_transaction, session_factory, transaction

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sqlite_file(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pkiq.db'}")
    with engine.begin() as conn:
        conn.execute(text("create table t (v integer)"))
    yield engine, Path(f"{tmp_path / 'pkiq.db'}-writer.lock")
    engine.dispose()


def turn_is_free(lock: Path) -> bool:
    """Whether another open file of the lock can take the turn now."""
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_write_transaction_holds_the_turn_until_it_commits_or_rolls_back(sqlite_file):
    engine, lock = sqlite_file
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        session.execute(text("insert into t values (1)"))
        assert not turn_is_free(lock)
    assert turn_is_free(lock)
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        session.execute(text("insert into t values (2)"))
        assert not turn_is_free(lock)
        raise RuntimeError("a bug in the middle of a write")
    assert turn_is_free(lock)
    with engine.connect() as conn:  # Core: the turn ends with the rollback, not the close
        conn.execute(text("insert into t values (3)"))
        assert not turn_is_free(lock)
        conn.rollback()
        assert turn_is_free(lock)
    with read_transaction(sessions) as session:
        assert session.scalar(text("select count(*) from t")) == 1
        assert turn_is_free(lock)  # readers take no turn
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600


def test_a_writer_waits_for_its_turn_and_then_writes(sqlite_file):
    engine, lock = sqlite_file
    holder = os.open(lock, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process's write transaction
    done = threading.Event()

    def write():
        with engine.begin() as conn:
            conn.execute(text("insert into t values (1)"))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.3)  # waiting for the turn
    os.close(holder)  # the other transaction ends
    assert done.wait(10)
    writer.join()
    with engine.connect() as conn:
        assert conn.scalar(text("select count(*) from t")) == 1


def test_a_turn_never_given_back_ends_in_database_is_locked(tmp_path):
    lock = tmp_path / "x.db-writer.lock"
    holder = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    turns = WriterTurns(str(tmp_path / "x.db"), timeout=0.2)
    connection = object()
    with pytest.raises(OperationalError, match="database is locked"):
        turns.take(connection)
    os.close(holder)
    turns.take(connection)  # free again: taken at once
    assert not turn_is_free(lock)
    turns.give_back(connection)
    assert turn_is_free(lock)
    turns.forget(connection)


def test_a_thread_holding_the_turn_does_not_wait_for_itself(tmp_path):
    """A second write transaction opened by a thread inside its first would wait for the
    turn forever; it is left to SQLite's busy timeout, as without turns."""
    turns = WriterTurns(str(tmp_path / "x.db"), timeout=0.2)
    first, second = object(), object()
    turns.take(first)
    turns.take(second)  # at once, holding nothing
    turns.give_back(second)
    assert not turn_is_free(tmp_path / "x.db-writer.lock")  # the first still holds it
    outcome = []

    def take_elsewhere():
        try:
            turns.take(object())
            outcome.append("taken")
        except OperationalError as exc:
            outcome.append(str(exc))

    other = threading.Thread(target=take_elsewhere)
    other.start()
    other.join()  # another thread does wait, and gives up after the timeout
    assert len(outcome) == 1 and "database is locked" in outcome[0]
    turns.give_back(first)
    assert turn_is_free(tmp_path / "x.db-writer.lock")
    for connection in (first, second):
        turns.forget(connection)


WRITER = """
import sys
from sqlalchemy import text
from shell.db import make_engine
engine = make_engine(sys.argv[1])
for _ in range(int(sys.argv[2])):
    with engine.begin() as conn:
        conn.execute(text("insert into t values (1)"))
"""


def test_threads_and_processes_writing_at_once_all_land(sqlite_file):
    engine, lock = sqlite_file
    url = str(engine.url)
    others = [subprocess.Popen([sys.executable, "-c", WRITER, url, "60"], cwd=ROOT)
              for _ in range(2)]

    def write(times: int) -> None:
        for _ in range(times):
            with engine.begin() as conn:
                conn.execute(text("insert into t values (1)"))

    threads = [threading.Thread(target=write, args=(60,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.wait(60) for p in others] == [0, 0]
    with engine.connect() as conn:
        assert conn.scalar(text("select count(*) from t")) == 6 * 60
    engine.dispose()  # every connection's lock file is closed with it
    held = [p for p in Path("/proc/self/fd").iterdir()
            if os.path.realpath(p) == os.path.realpath(lock)]
    assert held == []


def test_a_lock_file_that_cannot_be_opened_leaves_writers_to_sqlite(tmp_path, caplog):
    """Turns make waiting fairer; without them SQLite's lock still keeps writers apart."""
    (tmp_path / "x.db-writer.lock").mkdir()  # something in its place that is no file
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.execute(text("create table t (v integer)"))
    with engine.begin() as conn:
        conn.execute(text("insert into t values (1)"))
    with engine.connect() as conn:
        assert conn.scalar(text("select count(*) from t")) == 1
    assert "writers wait for SQLite's lock without taking turns" in caplog.text
    engine.dispose()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root makes files for another owner")
def test_root_makes_the_lock_file_for_the_databases_owner(tmp_path):
    """A command run as root must not leave a lock file the service's user cannot open."""
    database = tmp_path / "x.db"
    engine = make_engine(f"sqlite:///{database}")
    os.chown(database, 4321, 4321)  # the service's user
    with engine.begin() as conn:
        conn.execute(text("create table t (v integer)"))
    engine.dispose()
    lock = os.stat(f"{database}-writer.lock")
    assert (lock.st_uid, lock.st_gid) == (4321, 4321)


def test_a_writer_that_keeps_coming_back_does_not_keep_another_out(tmp_path):
    """One writer takes the turn again the moment it gives it back (a worker between
    batches), for a second; another that asks meanwhile gets it after that writer's current
    transaction, not after the whole second: it is at the head of the queue, and the first
    writer lines up behind it."""
    database = str(tmp_path / "pkiq.db")
    Path(database).touch()
    busy, patient = WriterTurns(database), WriterTurns(database)
    busy_conn, patient_conn = object(), object()
    stop, waited = threading.Event(), []
    rounds = 0

    def keep_coming_back():
        nonlocal rounds
        while not stop.is_set():
            busy.take(busy_conn)
            time.sleep(0.002)  # a short transaction
            busy.give_back(busy_conn)
            rounds += 1

    loop = threading.Thread(target=keep_coming_back)
    loop.start()
    try:
        time.sleep(0.05)
        for _ in range(5):
            started = time.monotonic()
            patient.take(patient_conn)
            waited.append(time.monotonic() - started)
            patient.give_back(patient_conn)
            time.sleep(0.01)
        stop.set()
    finally:
        stop.set()
        loop.join()
        busy.forget(busy_conn)
        patient.forget(patient_conn)
    assert rounds > 20  # the busy writer was really at it
    assert max(waited) < 0.1, waited  # one short transaction and a few tries, not its loop
