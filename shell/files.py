"""Writing files the way a CA must: whole or not at all, private ones 0600."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ca.errors import Conflict


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tree(folder: Path, files: dict[str, bytes], private: set[str]) -> None:
    """Create ``folder`` with ``files`` in it, all or nothing: built beside it, then renamed."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise Conflict(f"{folder} exists and is not an empty folder; choose a new one")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
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
