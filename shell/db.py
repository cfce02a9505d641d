"""Engines and sessions for SQLite (WAL, the embedded default) and PostgreSQL; migrations."""

from __future__ import annotations

import contextvars
import fcntl
import logging
import os
import sqlite3
import stat
import threading
import time
from contextlib import closing, contextmanager, nullcontext, suppress
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from ca.errors import ConfigError, PkiqError
from shell.files import file_kind
from shell.settings import DATABASE_ACCEPTED, DATABASE_SCHEMES


class DatabaseUnavailable(PkiqError):
    exit_code = 8
    http_status = 503


def make_engine(url: str, setting: str = "PKIQ_DATABASE_URL") -> Engine:
    """An engine for a SQLAlchemy URL; SQL parameters are never echoed into error messages
    (they can hold key material). A URL pkiq cannot use is a ConfigError naming
    ``setting``, the variable it came from: an unsupported database (``mysql://`` once
    ended in ModuleNotFoundError), or a SQLite file that cannot be made or is no file."""
    try:
        url.encode()
        parsed = make_url(url)
    except UnicodeEncodeError:
        raise ConfigError(f"{setting} is not valid UTF-8 (the database URL, or the SQLite "
                          "path made from it, must be)") from None
    except (ArgumentError, ValueError):
        raise ConfigError(f"{setting} is not a database URL; accepted: {DATABASE_ACCEPTED}"
                          ) from None
    if parsed.drivername not in DATABASE_SCHEMES:
        raise ConfigError(f"{setting}: {parsed.drivername}:// is not supported; accepted: "
                          f"{DATABASE_ACCEPTED}")
    try:
        return _make_engine(parsed, setting)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"{setting} is not a database URL pkiq can use ({exc}); accepted: "
                          f"{DATABASE_ACCEPTED}") from None


CONNECT_TIMEOUT = 10  # seconds to reach PostgreSQL


def _make_engine(parsed: URL, setting: str) -> Engine:
    if parsed.drivername == "postgresql":  # plain URLs get the psycopg 3 driver we ship
        parsed = parsed.set(drivername="postgresql+psycopg")
    url = parsed.render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _sqlite_file(Path(parsed.database), setting)
        engine = create_engine(url, connect_args={"timeout": BUSY_SECONDS},
                               hide_parameters=True)
        _sqlite_setup(engine)
        return engine
    # A database host that does not answer (a firewall dropping packets, a host gone) must
    # fail a command, a readiness check or a scrape in seconds, not after the operating
    # system's TCP timeout of minutes. A URL's own connect_timeout wins.
    connect = {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT}
    return create_engine(url, pool_pre_ping=True, hide_parameters=True, connect_args=connect)


def _sqlite_file(path: Path, setting: str) -> None:
    """Make the database file's folder and the file (0600: the CA database is nobody
    else's business), or say which setting names a place where it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = os.stat(path).st_mode if path.exists() else None
        if mode is None:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except FileExistsError as exc:  # mkdir met a file where a folder should be
        raise ConfigError(f"{setting}: cannot make the SQLite database {path}: "
                          f"{exc.filename} is not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot make the SQLite database {path}: "
                          f"{exc.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise ConfigError(f"{setting}: the SQLite database {path} is {file_kind(mode)}, "
                          "not a regular file")


BUSY_SECONDS = 30  # how long a writer waits for another's transaction before giving up


def _sqlite_setup(engine: Engine) -> None:
    """WAL for concurrent readers, and BEGIN IMMEDIATE so writers queue on the lock up front
    instead of failing with 'database is locked' when a read transaction tries to write.
    Writers of a database file take their turns through ``WriterTurns`` first."""
    database = engine.url.database
    turns = WriterTurns(database) if database and database != ":memory:" else None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if _READ_ONLY.get():
            conn.exec_driver_sql("BEGIN")
            return
        dbapi_conn = conn.connection.dbapi_connection
        if turns is not None:
            turns.take(dbapi_conn)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if turns is not None:
                turns.give_back(dbapi_conn)
            raise

    if turns is not None:
        dialect = engine.dialect
        for name in ("do_commit", "do_rollback"):  # the turn ends after the transaction
            setattr(dialect, name, _then_give_back(getattr(dialect, name), turns))
        event.listen(engine, "close", lambda dbapi_conn, _record: turns.forget(dbapi_conn))
        event.listen(engine, "close_detached", turns.forget)


def _then_give_back(end, turns: WriterTurns):
    def ended(dbapi_conn):
        try:
            end(dbapi_conn)
        finally:
            turns.give_back(dbapi_conn)
    return ended


class WriterTurns:
    """Writers of one SQLite file take turns on a lock file (``flock``) before BEGIN
    IMMEDIATE, and give the turn back at the commit or rollback.

    SQLite's own writer lock has no queue: a writer that finds it taken sleeps 1, 2, 5, 10,
    ... up to 100 ms between tries, so under load it wakes long after the lock came free,
    or never finds it free while others come and go (measured with the API benchmark: API
    batches waited 49 ms on average for the lock, at worst 1.3 s, behind the signing
    workers). Here a waiter tries again every fraction of a millisecond, and a transaction
    that has its turn finds SQLite's lock free. Every pkiq process on the file (web app,
    workers, CLI) takes turns; any other program is still waited for by the busy timeout.
    ``flock`` belongs to the open file, so each connection has its own and threads of one
    process exclude each other too; a process that dies loses its turn with its files.

    Writers also queue: one waits for ``<database>-writer.queue`` before it waits for the
    turn, so only the writer at the head of the line tries for the turn, and a writer that
    just gave it back (a worker between two batches) lines up behind it instead of taking
    it again at once. Without the queue an API batch could wait 100+ ms while two workers
    passed the turn back and forth between its tries (the API benchmark's p99).

    The lock file (``<database>-writer.lock``, 0600) is given the database's owner when root
    makes it, as SQLite does with its -wal and -shm files. Where it cannot be opened at all,
    writers go without turns: SQLite's own lock still keeps them apart, only less fairly."""

    POLL_FIRST, POLL_MOST = 0.0002, 0.002  # seconds between tries, doubling
    POLL_HEAD = 0.0005  # at most, for the head of the line: the turn idles while it sleeps

    def __init__(self, database: str, timeout: float = BUSY_SECONDS):
        self.database, self.path, self.timeout = database, f"{database}-writer.lock", timeout
        self.unusable: str | None = None  # why the lock file cannot be opened, if it cannot
        self.queue_path = f"{database}-writer.queue"
        self._files: dict[int, tuple[int, int]] = {}  # id(DBAPI connection) -> (turn, queue)
        self._holding: dict[int, int] = {}  # connection in a write transaction -> its thread
        self._books = threading.Lock()  # over the two dicts, shared by the pool's threads

    def take(self, dbapi_conn) -> None:
        """Wait for the turn (at most ``timeout`` seconds: then "database is locked", as
        SQLite says). A thread that holds a turn through another connection does not wait
        for itself: SQLite's busy timeout then decides, as it would without turns."""
        key = id(dbapi_conn)
        with self._books:
            if threading.get_ident() in self._holding.values():
                return
            if self.unusable:
                return
            files = self._files.get(key)
            if files is None:
                files = self._open()
                if files is None:
                    return
                self._files[key] = files
        turn, queue = files
        deadline = time.monotonic() + self.timeout
        self._lock(queue, deadline, self.POLL_MOST)
        try:
            self._lock(turn, deadline, self.POLL_HEAD)
        finally:
            fcntl.flock(queue, fcntl.LOCK_UN)
        with self._books:
            self._holding[key] = threading.get_ident()

    def _lock(self, fd: int, deadline: float, most: float) -> None:
        pause = self.POLL_FIRST
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationalError(
                        "BEGIN IMMEDIATE", None, sqlite3.OperationalError(
                            f"database is locked: another pkiq writer has held it for "
                            f"{self.timeout:g} s")) from None
                time.sleep(pause)
                pause = min(pause * 2, most)

    def _open(self) -> tuple[int, int] | None:
        opened: list[int] = []
        try:
            for path in (self.path, self.queue_path):
                opened.append(os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            for fd in opened:
                os.close(fd)
            self.unusable = f"{exc.filename or self.path}: {exc.strerror}"
            logging.getLogger("pkiq.db").warning(
                "cannot open %s (%s): writers wait for SQLite's lock without taking turns",
                exc.filename or self.path, exc.strerror)
            return None
        if os.geteuid() == 0:
            with suppress(OSError):  # the database's owner keeps using them after root did
                owner = os.stat(self.database)
                for fd in opened:
                    os.fchown(fd, owner.st_uid, owner.st_gid)
        return opened[0], opened[1]

    def give_back(self, dbapi_conn) -> None:
        # do_commit and do_rollback are handed the pool's proxy, the events the connection
        key = id(getattr(dbapi_conn, "dbapi_connection", dbapi_conn))
        with self._books:
            if self._holding.pop(key, None) is None:
                return
            turn, _queue = self._files[key]
        fcntl.flock(turn, fcntl.LOCK_UN)

    def forget(self, dbapi_conn) -> None:
        """The connection closed: close its lock file (which ends any turn it held)."""
        key = id(dbapi_conn)
        with self._books:
            self._holding.pop(key, None)
            files = self._files.pop(key, None)
        for fd in files or ():
            os.close(fd)


SCHEMA_HEAD = "0011"  # the newest migration; tests/test_db.py checks it against Alembic's


def alembic_config(engine: Engine, connection: Connection | None = None):
    """Alembic's settings for pkiq's migrations. Given ``connection``, env.py runs them on it,
    inside the caller's transaction; else in a transaction of its own on the engine."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.attributes["engine"] = engine
    if connection is not None:
        # https://alembic.sqlalchemy.org/en/latest/cookbook.html
        # #sharing-a-connection-across-one-or-more-programmatic-migration-commands
        cfg.attributes["connection"] = connection
    return cfg


# One lock per schema, so databases (and test schemas) sharing a server do not wait on each
# other. current_schema() is NULL when no schema on the search_path exists, and the lock
# function, being strict, would then return without locking: hence the coalesce.
# https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS
_PG_MIGRATE_LOCK = text("SELECT pg_advisory_xact_lock("
                        "hashtext('pkiq.migrate:' || coalesce(current_schema(), '')))")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is already there). Alembic
    is imported only to upgrade: every command starts here, and importing it costs more
    than the one-row check.

    Processes starting together on an empty or old database (two hosts, the first ``docker
    compose up``) take turns: the upgrade runs in one transaction that takes the migration
    lock, re-reads the revision (another process may have upgraded meanwhile) and upgrades
    only if still behind. PostgreSQL: an advisory lock held to the end of the transaction;
    its DDL is transactional, so the upgrade commits or rolls back with the lock. SQLite:
    BEGIN IMMEDIATE (see _sqlite_setup) takes the writer lock; SQLite's DDL is transactional
    too, and Alembic, handed a connection already in a transaction, runs every migration in
    it without committing (tests/test_migrate_concurrency.py checks both), so the writer
    lock covers the whole upgrade. (The one lock file, for a file not yet in WAL mode, only
    guards the first connection: see _sqlite_wal_switch_lock.)
    """
    try:
        with _sqlite_wal_switch_lock(engine), engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except OperationalError as exc:
        if "alembic_version" not in str(exc):  # no such table yet: a new database
            raise DatabaseUnavailable(f"cannot reach the database: {_short(exc)}") from exc
        current = None
    except ProgrammingError:  # PostgreSQL: no such table yet
        current = None
    if current == SCHEMA_HEAD:
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(_PG_MIGRATE_LOCK)
        # Read after the lock: under READ COMMITTED (the default, which make_engine keeps)
        # each statement sees what committed before it began, so a finished upgrade shows.
        # https://www.postgresql.org/docs/current/transaction-iso.html#XACT-READ-COMMITTED
        # (A failed SELECT would abort a PostgreSQL transaction: Alembic checks the table
        # exists first.)
        if MigrationContext.configure(conn).get_current_revision() != SCHEMA_HEAD:
            command.upgrade(alembic_config(engine, conn), "head")


def _sqlite_wal_switch_lock(engine: Engine):
    """A lock file serialising the first connection of processes opening a SQLite file not
    yet in WAL mode; nothing once it is. Every connection asks for WAL (_sqlite_setup), and
    switching a new file to WAL needs an exclusive lock: two connections switching at once
    may get "database is locked" straight away, SQLite not waiting out the busy timeout
    where waiting could deadlock (https://www.sqlite.org/c3ref/busy_handler.html): 8
    processes starting together on a fresh file lost one in about 4 rounds in 100. A WAL
    file stays in WAL mode, and asking again changes nothing. The lock file stays: deleting
    it would race with a process about to lock it.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return nullcontext()
    if not os.path.exists(database):
        return _flock(f"{database}.migrate-lock")
    # Asked of SQLite, not read with open(): closing any descriptor of the database file
    # drops every POSIX lock this process holds on it (fcntl locks are per process and
    # file), so a second engine in a process holding a connection would silently unlock the
    # first; SQLite's own connections share one lock table per file and never do that
    # (https://www.sqlite.org/howtocorrupt.html, section 2.2).
    uri = f"file:{quote(os.path.abspath(database))}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=5)) as probe:
            if probe.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return nullcontext()
    except sqlite3.Error:  # locked while switching, or unreadable: take the lock file
        pass
    return _flock(f"{database}.migrate-lock")


@contextmanager
def _flock(path: str):
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _short(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


@contextmanager
def transaction(factory: sessionmaker):
    """One unit of work: commit if the block finishes, roll everything back if it raises."""
    with factory() as session, session.begin():
        yield session


# Set by read_transaction: the SQLite "begin" listener then opens a deferred transaction.
_READ_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("pkiq_read_only",
                                                                  default=False)


@contextmanager
def read_transaction(factory: sessionmaker):
    """A unit of work that only reads (the web app's look-ups, asked for many times a
    second). On SQLite it opens with a plain BEGIN, not BEGIN IMMEDIATE, so it neither waits
    behind a writer for the writer lock nor holds one up: in WAL mode it reads the last
    commit. A write in it is a bug (SQLite may then refuse it)."""
    token = _READ_ONLY.set(True)
    try:
        with factory() as session, session.begin():
            yield session
    finally:
        _READ_ONLY.reset(token)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
