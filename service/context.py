"""What every use case needs, made on first use: settings, the database, the clock, and the
job announcer (a port: the front end plugs in the Celery one; tests and commands that queue
nothing need none)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.orm import sessionmaker

from ca import audit
from ca.audit import Actor
from shell.db import make_engine, migrate, read_transaction, session_factory, transaction
from shell.settings import Settings


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Announcer(Protocol):
    """Tells the workers that jobs are queued; raises when the broker cannot be reached (the
    jobs then stay queued in the database for the reconciler)."""

    def __call__(self, job_ids: Sequence[int]) -> None: ...


class ServiceContext:
    """Settings, a lazily made engine (no database for commands that need none), the clock
    and the announcer. One per process or command; ``close()`` releases the engine."""

    def __init__(self, settings: Settings | None = None,
                 clock: Callable[[], dt.datetime] = utc_now,
                 announcer: Announcer | None = None, actor: Actor | None = None):
        self.settings = settings or Settings()
        self.clock = clock
        self.announcer = announcer
        self._actor = actor
        self._engine = None
        self._factory: sessionmaker | None = None
        self._shared = False
        self._making = threading.Lock()
        # facts a use case may carry from one call to the next in this process (a CA's
        # copy_extensions for the next submit): hints only, each checked again in the
        # transaction that relies on it
        self.hints: dict = {}

    @property
    def actor(self) -> Actor:
        """Who the audit log names for what this context changes: a command's OS user
        unless the front end says otherwise (an API token, a worker)."""
        if self._actor is None:
            self._actor = Actor.command_line()
        return self._actor

    def acting_as(self, actor: Actor, **changes) -> ServiceContext:
        """The same settings, database and clock, on behalf of ``actor`` (one per API
        request); closing it leaves the shared engine alone. ``announcer=None``: jobs are
        written and not announced (the caller does it)."""
        view = ServiceContext(self.settings, self.clock,
                              changes.get("announcer", self.announcer), actor)
        view._factory, view._engine, view._shared = self.sessions, self._engine, True
        view.hints = self.hints
        return view

    def audit(self, session, action: str, target: str | None, data: dict | None = None
              ) -> None:
        """One audit row in ``session``'s transaction, naming this context's actor."""
        audit.record(session, self.actor, action, target, data, self.clock())

    def audit_many(self, session, items: list[tuple[str, str | None, dict | None]]) -> None:
        audit.record_many(session, self.actor, items, self.clock())

    @property
    def sessions(self) -> sessionmaker:
        """Made once, also when the first uses come from several threads at a time (a web
        app's first requests): a second engine would be left open, never disposed."""
        if self._factory is None:
            with self._making:
                if self._factory is None:
                    engine = make_engine(self.settings.effective_database_url,
                                         self.settings.database_setting)
                    migrate(engine)
                    self._engine = engine
                    self._factory = session_factory(engine)
        return self._factory

    def transaction(self):
        return transaction(self.sessions)

    def read_transaction(self):
        """For look-ups that write nothing and are asked often (shell.db.read_transaction)."""
        return read_transaction(self.sessions)

    def close(self) -> None:
        if self._shared:
            return
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._factory = None
