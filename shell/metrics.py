"""Metrics that worker processes record for the web app to serve (prometheus_client's
multiprocess mode): each process writes its own file in ``PKIQ_METRICS_DIR`` (default
``<data dir>/metrics``) and ``/metrics`` adds the files up at scrape time.

A file is named by host and pid (``histogram_HOST-PID.db``), not by pid alone: workers in
several containers share the folder through a volume and their pids repeat. When a worker
starts, the files of this host's processes that are gone are deleted (``clean_dead``): their
counts leave the totals then, which Prometheus reads as a counter reset, as at any restart.
Files of other hosts are theirs to clean.

prometheus_client is imported only by the processes that record or serve metrics."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from shell.settings import Settings

_state: dict = {}


def host_tag() -> str:
    """This host's part of the file names: no ``_`` (prometheus_client splits on it)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"


def identifier() -> str:
    return f"{host_tag()}-{os.getpid()}"


def prepare_dir(settings: Settings) -> Path:
    folder = settings.effective_metrics_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clean_dead(folder: Path) -> list[str]:
    """Delete the files of this host's processes that no longer run; their names."""
    prefix = host_tag() + "-"
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.glob("*.db"):
        owner = path.stem.split("_")[-1]
        if not owner.startswith(prefix) or not owner[len(prefix):].isdigit():
            continue
        if not _alive(int(owner[len(prefix):])):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def enable(settings: Settings) -> Path:
    """Make this process (and the ones it forks) record metrics in the shared folder. Call
    before any metric is made; idempotent."""
    folder = prepare_dir(settings)
    if _state.get("folder") == folder:
        return folder
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(identifier)
    _state["folder"] = folder
    return folder


def enabled() -> bool:
    return "folder" in _state


def histogram(name: str, documentation: str, labels: tuple[str, ...], buckets):
    """A histogram recorded in the shared folder (``enable`` first), made once per name."""
    made = _state.setdefault("metrics", {})
    if name not in made:
        from prometheus_client import CollectorRegistry, Histogram

        # its own registry: these are served by the web app from the files, not from here
        made[name] = Histogram(name, documentation, labels, buckets=buckets,
                               registry=CollectorRegistry())
    return made[name]
