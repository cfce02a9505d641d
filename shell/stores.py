"""A node's file store on disk: numbered generations and a ``current`` link swapped in one
rename, so that whoever reads the store (an Expressway upload script, a TLS server, an
``rsync`` to the node) sees the previous set of files or the new one, never a mix.

Layout under the store's root::

    .lock                  flock'd around publish and rollback (two publishers queue)
    generations/<N>/...    one complete set of files each, N increasing
    current -> generations/<N>

A generation is written aside under a temporary name, fsynced, renamed to its number, and
only then does ``current`` move (a new link under a temporary name, ``os.replace``d over
the old one: rename(2) is atomic). The last ``keep`` generations stay, for ``rollback``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ca.errors import BadInput, Conflict, NotFound, PkiqError
from ca.store_layout import MANIFEST, StoreContent
from shell.files import file_kind, read_regular

GENERATIONS = "generations"
CURRENT = "current"
LOCK = ".lock"
MAX_MANIFEST = 64 * 2**20
MAX_FILE = 1 << 30  # a store file read back (a bundle of very large CRLs)
_NEW_PREFIX = ".new-"
_LINK_PREFIX = ".current-"
_TARGET = re.compile(rf"^{GENERATIONS}/([1-9][0-9]*)$")


class StoreWriteError(PkiqError):
    """The store could not be written (disk full, permissions, a read-only file system):
    the previous generation is still current. A problem with the host, not the request."""

    exit_code = 3
    http_status = 500


@dataclass(frozen=True)
class PublishOutcome:
    changed: bool
    generation: int
    path: Path
    bytes_written: int
    removed: list[int] = field(default_factory=list)


class NodeStore:
    """One node's store at ``root`` (created 0700 if missing: it holds the private key)."""

    def __init__(self, root: Path, keep: int = 5):
        if keep < 1:
            raise ValueError("keep must be at least 1: the current generation")
        self.root = Path(root)
        self.keep = keep

    # ------------------------------------------------------------ reading

    def generations(self) -> list[int]:
        """The generation numbers present, oldest first (anything else in the folder,
        such as a crashed publisher's temporary folder, is not one)."""
        folder = self._generations_folder()
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._error(exc) from None
        return sorted(int(entry) for entry in names
                      if entry.isdigit() and entry[0] != "0" and _is_folder(folder / entry))

    def current_generation(self) -> int | None:
        """The generation ``current`` points at, None before the first publish."""
        link = self.root / CURRENT
        try:
            mode = os.lstat(link).st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(exc) from None
        if not stat.S_ISLNK(mode):
            raise Conflict(f"{link} is {file_kind(mode)}, not pkiq's link to a generation: "
                           f"{self.root} is not a pkiq node store; give an empty or new folder")
        target = os.readlink(link)
        match = _TARGET.match(target)
        if match is None:
            raise Conflict(f"{link} points at {target!r}, not at {GENERATIONS}/<N>: it was "
                           "changed by hand; point it at a generation or remove it")
        return int(match.group(1))

    def current_manifest(self) -> dict | None:
        """The current generation's manifest, None if nothing is published (or the
        generation was removed by hand)."""
        number = self.current_generation()
        if number is None:
            return None
        path = self._generations_folder() / str(number) / MANIFEST
        if not path.exists():
            return None
        data = read_regular(path, limit=MAX_MANIFEST, what="store manifest")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise BadInput(f"store manifest {path} is not valid JSON ({exc}); publish "
                           "again to replace the generation") from None

    def read_current(self, names: list[str], limit: int = MAX_FILE) -> tuple[int, dict]:
        """Files of the current generation, all from the same one (``current`` is resolved
        once: reading ``current/a`` then ``current/b`` could straddle a publish). Missing
        files are left out; NotFound before the first publish."""
        number = self.current_generation()
        if number is None:
            raise NotFound(f"nothing is published in {self.root} yet")
        folder = self._path(number)
        found = {}
        for name in names:
            try:
                found[name] = read_regular(folder / name, limit=limit, what=name)
            except BadInput:
                if (folder / name).exists():
                    raise
        return number, found

    def version(self) -> str | None:
        """What ``current`` points at (one readlink): changes with every publish and
        rollback."""
        try:
            return os.readlink(self.root / CURRENT)
        except OSError:
            return None

    # ------------------------------------------------------------ writing

    def publish(self, content: StoreContent) -> PublishOutcome:
        """Make ``content`` the current generation, unless it already is (same digest):
        then nothing at all is written."""
        _check_names(content.files)
        with self._locked():
            current = self.current_generation()
            if current is not None and self._holds(content.digest):
                return PublishOutcome(False, current, self._path(current), 0, [])
            self._remove_leftovers()
            number = max(self.generations(), default=0) + 1
            written = self._write_generation(number, content)
            try:
                self._point_current_at(number)
            except StoreWriteError:
                shutil.rmtree(self._path(number), ignore_errors=True)
                raise
            return PublishOutcome(True, number, self._path(number), written,
                                  self._prune(number))

    def _holds(self, digest: str) -> bool:
        """Whether the current generation is ``digest``'s; a manifest damaged or removed
        by hand is not, so publishing again repairs the store."""
        try:
            manifest = self.current_manifest()
        except BadInput:
            return False
        return isinstance(manifest, dict) and manifest.get("digest") == digest

    def rollback(self) -> int:
        """Point ``current`` back at the newest generation older than it; return its
        number. The generation left stays (until pruned); the next publish is numbered
        after the highest one present."""
        with self._locked():
            current = self.current_generation()
            if current is None:
                raise NotFound(f"nothing is published in {self.root}: nothing to roll back")
            older = [number for number in self.generations() if number < current]
            if not older:
                raise NotFound(f"no generation older than {current} is kept in {self.root}: "
                               "nothing to roll back to")
            self._point_current_at(older[-1])
            return older[-1]

    # ------------------------------------------------------------ inside

    def _path(self, number: int) -> Path:
        return self._generations_folder() / str(number)

    def _generations_folder(self) -> Path:
        """``root/generations``, refused if it is a link (it would take the store's files
        somewhere its owner did not choose) or not a folder."""
        folder = self.root / GENERATIONS
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            return folder
        except OSError as exc:
            raise self._error(exc) from None
        if not stat.S_ISDIR(mode):
            raise Conflict(f"{folder} is {file_kind(mode)}, not a folder: {self.root} is not "
                           "a pkiq node store; give an empty or new folder")
        return folder

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``root/.lock`` exclusively: two processes publishing one store take turns
        (flock: released by the kernel if a holder dies)."""
        self._make_root()
        try:
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise self._error(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _make_root(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            if not self.root.is_dir():
                raise Conflict(f"{self.root} exists and is not a folder") from None
            return
        except OSError as exc:
            raise self._error(exc) from None
        os.chmod(self.root, 0o700)  # whatever the umask

    def _write_generation(self, number: int, content: StoreContent) -> int:
        """Write every file under a temporary name in generations/, fsync, rename to
        ``number``; on any OS error remove what was written and raise StoreWriteError."""
        folder = self._generations_folder()
        staging: Path | None = None
        written = 0
        try:
            _make_folder(folder)
            staging = folder / f"{_NEW_PREFIX}{secrets.token_hex(6)}"
            _make_folder(staging)
            for name, data in content.files.items():
                target = staging / name
                _make_folder(target.parent)
                _write_file(target, data, 0o600 if name in content.private else 0o644)
                written += len(data)
            for sub in sorted({(staging / name).parent for name in content.files},
                              key=lambda path: len(path.parts), reverse=True):
                _fsync_folder(sub)  # deepest first, the staging folder last
            _fsync_folder(staging)
            os.rename(staging, folder / str(number))
            _fsync_folder(folder)
        except OSError as exc:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise self._error(exc) from None
        return written

    def _point_current_at(self, number: int) -> None:
        """A new link under a temporary name, renamed over ``current``: one rename, so a
        reader resolves either the old generation or the new one."""
        link = self.root / f"{_LINK_PREFIX}{secrets.token_hex(6)}"
        try:
            os.symlink(f"{GENERATIONS}/{number}", link)
            os.replace(link, self.root / CURRENT)
            _fsync_folder(self.root)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(link)
            raise self._error(exc) from None

    def _prune(self, current: int) -> list[int]:
        """Remove all but the newest ``keep`` generations, never the current one. A
        generation that cannot be removed now is left for the next publish."""
        numbers = self.generations()
        removed = []
        for number in numbers[:-self.keep]:
            if number == current:
                continue
            try:
                shutil.rmtree(self._path(number))
            except OSError:
                continue
            removed.append(number)
        return removed

    def _remove_leftovers(self) -> None:
        """Temporary folders and links of a publisher that died (we hold the lock, so no
        live one is writing them)."""
        folder = self._generations_folder()
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(folder):
                if entry.startswith(_NEW_PREFIX):
                    shutil.rmtree(folder / entry, ignore_errors=True)
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.root):
                if entry.startswith(_LINK_PREFIX):
                    os.unlink(self.root / entry)

    def _error(self, exc: OSError) -> StoreWriteError:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        where = f" ({exc.filename})" if exc.filename else ""
        return StoreWriteError(f"cannot write the node store {self.root}: {reason}{where}; "
                               "the previous generation is still current")


def _check_names(files: dict[str, bytes]) -> None:
    """Each name relative and inside the generation: no ``..``, no absolute path."""
    for name in files:
        if "\0" in name or any(part in ("", ".", "..") for part in name.split("/")):
            raise ValueError(f"store file name {name!r} is not a plain relative path")


def _is_folder(path: Path) -> bool:
    """A real folder (not a link to one); False if it vanished meanwhile (pruned)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _make_folder(path: Path) -> None:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return
    os.chmod(path, 0o755)  # whatever the umask


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(path: Path) -> None:
    """Make renames and new entries in ``path`` durable; some file systems refuse to
    fsync a folder (EINVAL), which is not an error here."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)
