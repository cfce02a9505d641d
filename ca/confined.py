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


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a character device'... for an error line."""
    return next((word for test, word in _KINDS if test(mode)), "not a regular file")


def read_regular(path: Path, *, limit: int, what: str = "", head: bool = False) -> bytes:
    """The bytes of a regular file (a symlink to one is fine), at most ``limit`` of them.

    ``st_size`` is not trusted: /dev/zero has none and grows a reader until the OOM killer
    comes, a FIFO blocks a reader for ever, /proc files say 0. So: stat first, so that a
    device is never even opened (opening a tape or a serial line has effects); open with
    O_NONBLOCK (a FIFO swapped in meanwhile cannot block) and check the descriptor again;
    read at most ``limit`` + 1 bytes. Larger files are refused, or with ``head`` cut to
    ``limit`` (a passphrase file: only its first line counts)."""
    label = f"{what} {path}".strip()
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            if os.path.islink(path):  # say where the link leads: /dev/zero, a FIFO...
                label += f" (a link to {os.path.realpath(path)})"
            raise BadInput(f"{label} is {file_kind(mode)}, not a regular file: pkiq reads "
                           "only regular files")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise BadInput(f"cannot read {label}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between stat and open
            raise BadInput(f"{label} is {file_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit and not head:
            raise BadInput(f"{label} is {info.st_size} bytes; pkiq reads at most {limit}")
        chunks, left = [], limit if head else limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise BadInput(f"cannot read {label}: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise BadInput(f"{label} is larger than {limit} bytes; pkiq reads at most {limit}")
    return data


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
