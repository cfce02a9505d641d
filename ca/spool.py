"""Bytes held in memory while one shared budget allows, in an anonymous temporary file
beyond it.

A CRL refresh receives bodies from many servers at once and inflates archives it did not
make. If each download or inflation kept its bytes in memory, the worst case would be the
per-download cap times the parallelism; with every spool drawing on one ``MemoryBudget``,
what is held in memory at once stays under the budget whatever the answers are, and the
rest waits on disk (``tempfile``'s folder: ``TMPDIR``, else /tmp). Nothing here decides
what is too big: callers count and refuse; this only decides where the bytes live.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import BinaryIO

DEFAULT_BUDGET = 8 * 2**20
DEFAULT_PER_SPOOL = 256 * 1024


class MemoryBudget:
    """Bytes that all the spools sharing this object may hold in memory at once, and at
    most ``per_spool`` of them for any one: a body bigger than that (a big CRL, or an
    endless answer) goes to disk at once. Large buffers freed by many threads stay with
    the allocator's per-thread arenas; keeping each spool's memory small is what keeps the
    process's real footprint near the budget rather than a multiple of it."""

    def __init__(self, limit: int = DEFAULT_BUDGET, per_spool: int = DEFAULT_PER_SPOOL):
        self.limit = limit
        self.per_spool = per_spool
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            self.peak = max(self.peak, self.used)
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.used -= size

    def __repr__(self) -> str:
        return f"MemoryBudget(limit={self.limit:,}, used={self.used:,})"


class Spool:
    """Written once, then read; ``close()`` gives the memory back or deletes the file.

    In memory the chunks are kept as written (a list, joined once when read: growing one
    buffer by reallocation left the allocator holding about twice the budget); beyond the
    budget, an anonymous temporary file. ``source()`` is what
    ``ca.crl_decode.decode_crls`` reads: bytes while in memory, else the file."""

    def __init__(self, budget: MemoryBudget):
        self._budget = budget
        self._chunks: list[bytes] | None = []
        self._held = 0  # bytes taken from the budget
        self._file: BinaryIO | None = None
        self.size = 0

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        if self._chunks is not None:
            if self.size + len(data) <= self._budget.per_spool and \
                    self._budget.take(len(data)):
                self._chunks.append(bytes(data))
                self._held += len(data)
                self.size += len(data)
                return
            self._to_disk()
        self._file.write(data)
        self.size += len(data)

    def _to_disk(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="pkiq-spool-", buffering=0)  # noqa: SIM115
        for chunk in self._chunks:
            self._file.write(chunk)
        self._chunks = None
        self._budget.give(self._held)
        self._held = 0

    def source(self) -> bytes | BinaryIO:
        """The content: bytes when in memory, else the file at its start."""
        if self._chunks is not None:
            if len(self._chunks) != 1:
                self._chunks = [b"".join(self._chunks)]
            return self._chunks[0]
        self._file.seek(0)
        return self._file

    def read(self) -> bytes:
        """The whole content as one bytes object (one allocation when on disk)."""
        source = self.source()
        return source if isinstance(source, bytes) else source.read()

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks = None
            self._budget.give(self._held)
            self._held = 0
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "disk" if self.on_disk else "memory"
        return f"Spool({self.size:,} bytes in {where})"


class FileView:
    """A file's bytes searched and sliced in windows (``os.pread``), never read whole: a PEM
    file on disk is parsed without holding its text. Offers what ``ca.encoding`` and
    ``ca.crl_decode`` use of ``bytes``: ``len``, slices, ``find``, ``count``, ``in``."""

    WINDOW = 1 << 20

    def __init__(self, file: BinaryIO):
        self._fd = file.fileno()
        self._size = os.fstat(self._fd).st_size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key):
        if isinstance(key, int):
            at = key + self._size if key < 0 else key
            if not 0 <= at < self._size:
                raise IndexError("FileView index out of range")
            return os.pread(self._fd, 1, at)[0]
        start, stop, step = key.indices(self._size)
        if step != 1:
            raise ValueError("FileView slices have no step")
        return self._read(start, stop)

    def _read(self, start: int, stop: int) -> bytes:
        if stop <= start:
            return b""
        data = os.pread(self._fd, stop - start, start)
        while len(data) < stop - start:  # pread may return less; a regular file rarely does
            more = os.pread(self._fd, stop - start - len(data), start + len(data))
            if not more:
                break
            data += more
        return data

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        start, end, _ = slice(start, end).indices(self._size)
        overlap = max(len(sub) - 1, 0)
        at = start
        while at < end:
            stop = min(at + self.WINDOW, end)
            found = self._read(at, min(stop + overlap, end)).find(sub)
            if found != -1:
                return at + found
            at = stop
        return -1

    def count(self, sub: bytes) -> int:
        found, at = 0, self.find(sub)
        while at != -1:
            found += 1
            at = self.find(sub, at + len(sub))
        return found

    def __contains__(self, sub: bytes) -> bool:
        return self.find(sub) != -1
