"""Reading the files of a folder someone else laid out, without leaving it.

An import runs with the operator's rights on a folder that may come from anyone: a path its
config names, or a symlink in it, must not lead to ``/etc/shadow`` or another CA's key. Each
path is resolved once (symlinks and ``..`` included) and must lie inside the folder; the
file is then opened from the folder down, one component at a time, never following a
symlink, so a link swapped in after the check is refused rather than followed. Only regular
files are read, and at most a cap: a FIFO, a device or a file growing while read is refused,
not waited on or read whole.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import BadInput

SHORT = 16  # characters of a file's own text an error may show (names, never content)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_PATH_MAX, _NAME_MAX = 4096, 255  # Linux's limits (limits.h)


def shown(text: str, limit: int = SHORT) -> str:
    """``text`` fit for a one-line error: quoted, cut to ``limit`` characters, with control,
    format (bidi) and other unprintable characters escaped."""
    cut = text[:limit]
    return repr(cut) + ("..." if len(text) > limit else "")


def read_regular(path: Path, what: str, limit: int) -> bytes:
    """A file the operator named (``--config``): symlinks followed, but regular and bounded."""
    try:
        fd = os.open(path, _READ_FLAGS & ~os.O_NOFOLLOW)
    except (OSError, ValueError) as exc:
        raise BadInput(f"{what} cannot be read: {_reason(exc)}") from None
    return _read_fd(fd, what, limit)


class Folder:
    """A folder whose files are read only from inside it."""

    def __init__(self, path: Path):
        real = Path(os.path.realpath(path))  # the operator's choice: resolved once, trusted
        if not real.is_dir():
            raise BadInput(f"{path} is not a directory")
        self.root = real

    def locate(self, value: str, what: str) -> Path:
        """The real path ``value`` leads to (a relative one from the folder, not from the
        working directory), refused when that is outside the folder."""
        if "\x00" in value:
            raise BadInput(f"{what}: a path cannot hold a NUL character")
        path = Path(value) if os.path.isabs(value) else self.root / value
        try:
            real = Path(os.path.realpath(path))
        except (OSError, ValueError) as exc:
            raise BadInput(f"{what} cannot be resolved: {_reason(exc)}") from None
        if len(os.fsencode(real)) >= _PATH_MAX or any(
                len(os.fsencode(part)) > _NAME_MAX for part in real.parts):
            raise BadInput(f"{what}: the path is longer than a file system allows")
        if real != self.root and self.root not in real.parents:
            raise BadInput(f"{what} leads outside {self.root} (to {shown(str(real), 120)}); "
                           "pkiq reads a demoCA only from inside its folder")
        return real

    def read(self, real: Path, what: str, limit: int, *, missing_ok: bool = False
             ) -> bytes | None:
        """The bytes of the regular file at ``real`` (from ``locate``); None if it does not
        exist and ``missing_ok``."""
        try:
            fd = self._open(real, _READ_FLAGS)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise BadInput(f"{what} not found: {real}") from None
        except (OSError, ValueError) as exc:
            raise BadInput(f"{what} cannot be read: {_reason(exc)}") from None
        return _read_fd(fd, what, limit)

    def is_folder(self, real: Path, what: str) -> bool:
        """Whether ``real`` is a folder inside this one: False if absent, refused if it is
        anything else."""
        try:
            os.close(self._open(real, _DIR_FLAGS))
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            raise BadInput(f"{what} is not a folder") from None
        except (OSError, ValueError) as exc:
            raise BadInput(f"{what} cannot be read: {_reason(exc)}") from None
        return True

    def _open(self, real: Path, flags: int) -> int:
        """Open ``real`` by walking down from the folder with O_NOFOLLOW at every step (no
        openat2 RESOLVE_BENEATH in Python): ``real`` holds no symlink, so meeting one means
        the folder changed since ``locate``."""
        parts = real.relative_to(self.root).parts
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts[:-1]:
                child = _open_at(fd, part, _DIR_FLAGS)
                os.close(fd)
                fd = child
            return _open_at(fd, parts[-1] if parts else ".", flags)
        finally:
            os.close(fd)


def _open_at(dir_fd: int, name: str, flags: int) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # O_NOFOLLOW met a symlink?
            try:
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                is_link = stat.S_ISLNK(mode)
            except OSError:
                is_link = False
            if is_link:
                raise OSError(errno.ELOOP, "symlink") from None
        raise


def _read_fd(fd: int, what: str, limit: int) -> bytes:
    """Read at most ``limit`` bytes from a regular file; ``st_size`` is checked first but not
    trusted (the file may grow while it is read)."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadInput(f"{what} is not a regular file")
        if info.st_size > limit:
            raise BadInput(f"{what} is larger than {limit:,} bytes")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BadInput(f"{what} is larger than {limit:,} bytes")
    return data


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "a symlink loop, or a symlink where none was when the path was checked"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "not a usable path"
