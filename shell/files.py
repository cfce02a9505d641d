"""Reading and writing files the way a CA must: inputs bounded and regular files only,
outputs whole or not at all, never in place of anything but a regular file, private ones
0600."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

from ca.confined import file_kind, read_regular
from ca.errors import BadInput, Conflict

__all__ = ["file_kind", "read_regular"]  # shared with ca/ (the demoCA import): one reader

def check_target(path: Path) -> None:
    """Refuse, before any work is done, an output path that could not be written or would
    replace something that is not a regular file: a device (``--out /dev/full`` as root
    replaced the device node), a FIFO, a socket, a directory — or a symbolic link, which
    renaming over would silently turn into a file while whoever made the link expects the
    target to change (give the link's target instead)."""
    path = Path(path)
    parent = path.parent
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # ENAMETOOLONG, ENOTDIR (a parent is a file), ELOOP, EACCES
        raise BadInput(f"cannot write {path}: {exc.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise BadInput(f"{path} is {file_kind(mode)}: pkiq replaces only regular files")
    try:
        parent_mode = os.stat(parent).st_mode
    except FileNotFoundError:
        raise BadInput(f"cannot write {path}: folder {parent} does not exist") from None
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {parent}: {exc.strerror}") from None
    if not stat.S_ISDIR(parent_mode):
        raise BadInput(f"cannot write {path}: {parent} is {file_kind(parent_mode)}, "
                       "not a folder")
    name_max = os.pathconf(parent, "PC_NAME_MAX")
    if len(os.fsencode(path.name)) > name_max:
        raise BadInput(f"cannot write {path}: the file name is "
                       f"{len(os.fsencode(path.name))} bytes, the folder allows {name_max}")
    if len(os.fsencode(str(path))) >= os.pathconf(parent, "PC_PATH_MAX"):
        raise BadInput(f"cannot write {path}: the path is longer than the system allows")


class StagedFile:
    """A file written aside, under a short temporary name in the target's folder (so the
    rename is atomic and every failure but the rename's shows up before ``commit``):
    created, written and fsynced on construction, put in place by ``commit``, removed by
    ``discard``. The front end stages an output before the database commits and renames it
    after, so that a failed write leaves the database as it was."""

    def __init__(self, path: Path, data: bytes, mode: int = 0o644):
        self.path = Path(path)
        check_target(self.path)
        folder = self.path.parent
        self.tmp: Path | None = folder / f".pkiq-{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, mode)
        except OSError as exc:
            self.tmp = None
            raise BadInput(f"cannot write {self.path}: {exc.strerror}") from None
        try:
            os.fchmod(fd, mode)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            self.discard()
            raise BadInput(f"cannot write {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def commit(self) -> None:
        """Rename over the target, checked again: what appeared there meanwhile is refused
        as it would have been at the start."""
        if self.tmp is None:
            raise RuntimeError("nothing staged")
        try:
            check_target(self.path)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise BadInput(f"cannot write {self.path}: {exc.strerror}") from None
        except BaseException:
            self.discard()
            raise
        self.tmp = None
        _fsync_folder(self.path.parent)

    def discard(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it; only a regular
    file (or nothing) is ever replaced, and the folder must exist."""
    StagedFile(path, data, mode).commit()


def write_tree(folder: Path, files: dict[str, bytes], private: set[str]) -> None:
    """Create ``folder`` with ``files`` in it, all or nothing: built beside it, then renamed.
    Only a missing folder or an empty real one (not a link to one) is taken."""
    folder = Path(folder)
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise BadInput(f"cannot write {folder}: {exc.strerror}") from None
    if mode is not None and (not stat.S_ISDIR(mode) or any(folder.iterdir())):
        what = "is not empty" if stat.S_ISDIR(mode) else f"is {file_kind(mode)}"
        raise Conflict(f"{folder} {what}; choose a new folder")
    try:
        _build_tree(folder, files, private)
    except OSError as exc:
        raise BadInput(f"cannot write {folder}: {exc.strerror}") from None


def _build_tree(folder: Path, files: dict[str, bytes], private: set[str]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pkiq-", dir=folder.parent))
    try:
        for name, data in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600 if name in private else 0o644
            if name in private:
                target.parent.chmod(0o700)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        for sub in ("certs", "crl", "newcerts"):
            (staging / sub).mkdir(exist_ok=True)
        if folder.exists():
            folder.rmdir()
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
