"""Downloads kept in the process, rebuilt only when their source changes.

A thousand pollers asking every few seconds must not cost a thousand database reads: the
versions of every source (for CAs, ``service.downloads.ca_versions``) are read at most once
per ``interval`` by one task, and each file is built once per version of its source. A
request then costs a dictionary look-up.

While the versions are being re-read, requests are answered from the previous read (stale
while revalidate): a slow database, such as SQLite waiting behind a writer, delays how soon
a new CRL is seen, never the answer. Only the very first request waits for a read."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

from anyio import to_thread
from sqlalchemy.exc import SQLAlchemyError

from ca.errors import PkiqError

log = logging.getLogger("pkiq.web")
T = TypeVar("T")


def first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Refreshed(Generic[T]):
    """The result of ``read()`` (blocking, run in a worker thread), read again at most once
    per ``interval`` seconds. A failed re-read is logged and the previous result kept."""

    def __init__(self, read: Callable[[], T], interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.read, self.interval, self.clock = read, interval, clock
        self._value: T | None = None
        self._read_at = float("-inf")
        self._first: asyncio.Lock | None = None
        self._task: asyncio.Task | None = None
        self._failing = False

    async def get(self) -> T:
        if self._value is None:
            self._first = self._first or asyncio.Lock()
            async with self._first:  # the first read: everyone waits for the one read
                if self._value is None:
                    await self._refresh(raise_errors=True)
            return self._value
        if self.clock() - self._read_at >= self.interval and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh())
        return self._value

    async def _refresh(self, raise_errors: bool = False) -> None:
        started = self.clock()
        try:
            self._value = await to_thread.run_sync(self.read)
        except Exception as exc:
            if raise_errors:
                raise
            if not self._failing:  # once per outage, not once a second
                # A database error is one line; anything else is a bug: its traceback too.
                known = isinstance(exc, PkiqError | SQLAlchemyError)
                log.error("cannot re-read what changed (%s); serving what was read last",
                          first_line(exc), exc_info=None if known else exc)
            self._failing = True
        else:
            if self._failing:
                log.warning("re-reading what changed works again")
            self._failing = False
        finally:
            self._read_at = started  # a failed read is retried after the interval too
            self._task = None


class VersionedDownloads(Generic[T]):
    """Files built once per version of their source. ``versions()`` maps each source (a CA
    name; a node for the per-node bundles) to a value that changes whenever any of its files
    does; ``get(source, variant, build)`` gives the file ``build()`` made for the current
    version, or None when the source is unknown. A ``PkiqError`` from ``build`` (a CA without
    a CRL yet) is kept and raised again until the version changes; other errors are not."""

    def __init__(self, versions: Callable[[], Mapping[Hashable, Hashable]],
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.versions = Refreshed(versions, interval, clock)
        self._built: dict[tuple, tuple[Hashable, T | PkiqError]] = {}
        self._building: dict[tuple, asyncio.Future] = {}

    async def get(self, source: Hashable, variant: Hashable,
                  build: Callable[[], T]) -> T | None:
        version = (await self.versions.get()).get(source)
        if version is None:
            return None
        key = (source, variant)
        found = self._built.get(key)
        if found is None or found[0] != version:
            found = await self._build(key, version, build)
        if isinstance(found[1], PkiqError):
            raise found[1]
        return found[1]

    async def _build(self, key: tuple, version: Hashable, build: Callable[[], T]) -> tuple:
        """One build per key at a time, in a task of its own: the requests that arrive
        meanwhile await the same one, and a request that goes away does not cancel it."""
        task = self._building.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._run(key, version, build))
            self._building[key] = task
        return await asyncio.shield(task)

    async def _run(self, key: tuple, version: Hashable, build: Callable[[], T]) -> tuple:
        try:
            try:
                result: T | PkiqError = await to_thread.run_sync(build)
            except PkiqError as exc:
                result = exc
            found = self._built[key] = (version, result)
            return found
        finally:
            del self._building[key]
