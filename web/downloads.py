"""The CA files: ``/ca/NAME.crl``, ``.crl.pem``, ``.crt`` and ``.pem``, from the cache in
``web.cache`` through conditional GET (``web.conditional``).

How long a copy may be kept (Cache-Control) is decided here, per kind of file."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import ServiceContext, drift
from service import downloads as service_downloads
from service.downloads import Download

from .cache import VersionedDownloads
from .conditional import respond

log = logging.getLogger("pkiq.web")
# The longest a cache may keep a file without asking again: an hour bounds how long a CRL
# issued early (after a revocation) takes to reach pollers behind any HTTP cache.
MAX_AGE = 3600
# ca.authority.check_name_free: what a CA name can be. Anything else is answered without
# a look-up (and never echoed back whole).
CA_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Suffix -> (which file, PEM?). The longest suffix is tried first, so /ca/A.crl.pem is CA
# A's CRL in PEM; a CA named "A.crl" reaches its PEM certificate only as A.crl.crt (DER).
SUFFIXES = {".crl.pem": ("crl", True), ".crl": ("crl", False), ".crt": ("cert", False),
            ".pem": ("cert", True)}


def crl_cache_control(next_update: dt.datetime, now: dt.datetime) -> str:
    """Cache-Control for a CRL. ``max-age`` never reaches past nextUpdate, so no cache
    (a proxy's, a client's) holds a copy beyond the time it was said to be replaced
    (RFC 5280 section 5.1.2.5) without asking: an Expressway treats every certificate of a
    CA whose CRL has expired as revoked (Cisco guide, "Manual CRL updates"). It is at most
    MAX_AGE. Past nextUpdate the CRL on hand is overdue: ``no-cache`` makes every cache ask
    each time (a cheap 304 while nothing changed) and pick up the replacement the moment it
    is issued."""
    left = int((next_update - now).total_seconds())
    if left <= 0:
        return "no-cache"
    return f"public, max-age={min(left, MAX_AGE)}"


def cert_cache_control() -> str:
    """A CA's certificate never changes under its name; an hour still lets a CA made again
    under the same name (another database) be seen the same day."""
    return f"public, max-age={MAX_AGE}"


def shown(name: str) -> str:
    """A requested name fit to quote in a one-line answer: short, no control characters."""
    text = repr(name[:64])
    return text + ("..." if len(name) > 64 else "")


def split_file_name(file_name: str) -> tuple[str, str, bool]:
    """(CA name, "crl" or "cert", PEM?) of a file under /ca/; 404 for anything else."""
    for suffix, (kind, pem) in SUFFIXES.items():
        if file_name.endswith(suffix):
            name = file_name[:-len(suffix)]
            if not CA_NAME.fullmatch(name):
                raise HTTPException(404, f"no CA named {shown(name)}: CA names are 1-64 "
                                         "letters, digits, '-', '_' or '.'")
            return name, kind, pem
    raise HTTPException(404, f"no file {shown(file_name)}: a CA's files are /ca/NAME.crl, "
                             "/ca/NAME.crl.pem, /ca/NAME.crt and /ca/NAME.pem")


def ca_route(ctx: ServiceContext, refresh_seconds: float = 1.0) -> Route:
    """The /ca/ route over ``ctx``; a new CRL is served within ``refresh_seconds``. A plain
    Starlette route, its path read here: FastAPI's parameter handling would add some 80 us
    to each answer, a third again of a 304's whole cost."""
    files = VersionedDownloads(lambda: service_downloads.ca_versions(ctx), refresh_seconds)

    def builder(name: str, kind: str, pem: bool) -> Callable[[], Download]:
        use_case = service_downloads.ca_crl if kind == "crl" else service_downloads.ca_certificate
        return lambda: use_case(ctx, name, pem=pem)

    async def ca_file(request: Request) -> Response:
        """A CA's CRL or certificate, DER or PEM, answering conditional requests."""
        name, kind, pem = split_file_name(request.path_params["file_name"])
        download = await files.get(name, (kind, pem), builder(name, kind, pem))
        if download is None:
            raise HTTPException(404, f"no CA named {shown(name)}")
        if kind == "crl":
            return respond(request, download, crl_cache_control(download.expires, ctx.clock()))
        return respond(request, download, cert_cache_control())

    return Route("/ca/{file_name}", ca_file, methods=["GET", "HEAD"])


# A node FQDN as the registry keeps it (lower-case), a cluster name as ca.nodes allows it.
NODE_NAME = re.compile(r"[a-z0-9.-]{1,253}")
CLUSTER_NAME = CA_NAME


class FetchLog:
    """Which node fetched its CRL bundle when (drift: an Expressway whose automatic CRL
    update stopped). Written at most once a minute per bundle URL and client, in a thread
    the download does not wait for (a writer holding the database must not delay a CRL),
    so a node polling in a loop costs no database write per request; a failed write is
    logged and never fails the download."""

    def __init__(self, ctx: ServiceContext, interval: float = 60.0):
        self.ctx, self.interval = ctx, interval
        self._last: dict[tuple, float] = {}
        self._pending: set[asyncio.Task] = set()

    def seen(self, kind: str, name: str, remote: str | None, path: str) -> None:
        key, now = (kind, name, remote), time.monotonic()
        if now - self._last.get(key, -math.inf) < self.interval:
            return
        self._last[key] = now
        if len(self._last) > 10_000:  # many clients: forget the oldest half
            for old in sorted(self._last, key=self._last.get)[:5_000]:
                del self._last[old]
        if len(self._pending) > 100:  # the database is stuck: do not pile up threads
            return
        task = asyncio.get_running_loop().create_task(self._record(kind, name, remote, path))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record(self, kind: str, name: str, remote: str | None, path: str) -> None:
        try:
            await asyncio.to_thread(drift.record_bundle_fetch, self.ctx, kind, name, remote,
                                    path)
        except Exception:  # noqa: BLE001 - the download matters more than its record
            log.exception("could not record the CRL bundle fetch of %s %s", kind, name)


def store_routes(ctx: ServiceContext, refresh_seconds: float = 1.0) -> list[Route]:
    """``/nodes/FQDN/crls.zip|crls.tar.gz|crls.pem`` and the same under ``/clusters/NAME/``:
    the URLs an Expressway's automatic CRL updates are pointed at. A republished store is
    served within ``refresh_seconds``."""
    files = VersionedDownloads(lambda: service_downloads.store_versions(ctx),
                               refresh_seconds)
    fetches = FetchLog(ctx)

    def answer(kind: str, pattern: re.Pattern, use_case):
        async def bundle(request: Request) -> Response:
            """A node's or a cluster's CRL bundle, answering conditional requests."""
            name = request.path_params["name"].lower() if kind == "node" \
                else request.path_params["name"]
            file_name = request.path_params["file_name"]
            if not pattern.fullmatch(name):
                raise HTTPException(404, f"no {kind} named {shown(name)}")
            if file_name not in service_downloads.BUNDLE_FILES:
                raise HTTPException(404, f"no file {shown(file_name)}: the bundles are "
                                    f"{', '.join(service_downloads.BUNDLE_FILES)}")
            download = await files.get((kind, name), file_name,
                                       lambda: use_case(ctx, name, file_name))
            if download is None:
                raise HTTPException(404, f"no {kind} named {shown(name)}")
            control = (crl_cache_control(download.expires, ctx.clock())
                       if download.expires else "no-cache")
            fetches.seen(kind, name, request.client.host if request.client else None,
                         request.url.path)
            return respond(request, download, control)
        return bundle

    return [Route("/nodes/{name}/{file_name}", answer("node", NODE_NAME,
                                                      service_downloads.node_bundle),
                  methods=["GET", "HEAD"]),
            Route("/clusters/{name}/{file_name}", answer("cluster", CLUSTER_NAME,
                                                         service_downloads.cluster_bundle),
                  methods=["GET", "HEAD"])]
