"""Fetching CRLs from HTTP(S) distribution points, bounded in time, size, memory and reach.

The nightly refresh asks many servers it does not control for files it must not trust, so:

* every fetch has a deadline and a byte cap that hold while the body streams, and bodies go
  to spools drawing on one ``ca.spool.MemoryBudget`` for the whole run (beyond it, to a
  temporary file), so parallelism never multiplies the memory a hostile answer can take;
* results are handed over as they complete (``Fetcher``), and a bounded backlog stops the
  workers while the caller is behind;
* redirects are followed by hand, only to what ``ca.crl_config.check_url`` accepts as a
  distribution point, counted, loops named; a point that is not itself internal is never
  led into loopback, private, link-local or unique-local networks (the resolved address is
  checked, and the connection made to the address checked, so a name cannot be re-pointed
  between the check and the connection; ``CrlNetwork.allow_internal`` lists exceptions);
* HTTPS servers are verified against the system CAs plus the trusted CA list;
* an HTTP proxy is used only when ``CrlNetwork.proxy`` says so (``trust_env`` stays off:
  nothing is taken from ``HTTP_PROXY``, ``.netrc`` or ``REQUESTS_CA_BUNDLE``).

Per-URL problems come back as results with one sentence an operator can act on, never as
exceptions; no sentence quotes more than ``ca.crl_config.SHOWN_URL`` characters of a URL or
anything a server sent. Decoding and validation are ``ca.crl_decode`` and ``ca.crl_install``.
"""

from __future__ import annotations

import http
import http.client
import ipaddress
import logging
import os
import queue
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import certifi
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import connection as urllib3_connection

from ca.crl_config import CrlNetwork, check_url, safe_url, short_url
from ca.errors import BadInput
from ca.spool import DEFAULT_BUDGET, MemoryBudget, Spool

from .causes import causes, find_cause

log = logging.getLogger("pkiq.scheduler")
USER_AGENT = "pkiq-crl-fetch/0.1"
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_DRAIN = 64 * 1024  # read this much of a redirect or error body to keep the connection
DIRECT = CrlNetwork()  # no proxy, no internal exceptions: the default


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float = 5.0
    read_timeout: float = 15.0  # for each read from the socket
    total_timeout: float = 60.0  # per URL, whole download incl. retries, checked while streaming
    max_bytes: int = 64 * 2**20  # hard cap on the body as received
    max_redirects: int = 5
    retries: int = 2  # on 5xx, connection errors and timeouts, with backoff
    backoff: float = 0.5  # seconds, doubled each retry
    parallelism: int = 16
    memory_bytes: int = DEFAULT_BUDGET  # bodies held in memory at once, all downloads together


@dataclass(frozen=True)
class Validator:
    """What we remember from the last good fetch of a URL, for a conditional GET."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass
class FetchResult:
    url: str  # as given
    outcome: str  # "fetched" | "not_modified" | "error"
    http_status: int | None
    body: bytes | None  # set by fetch_all when fetched; a Fetcher's results carry ``content``
    validator: Validator  # from the response headers (for the next conditional GET)
    bytes_received: int
    error: str | None  # one clear sentence when outcome == "error"
    final_url: str  # after redirects, credentials hidden
    elapsed: float
    content: Spool | None = field(default=None, repr=False)  # the body, until close()

    def close(self) -> None:
        """Free the body's memory or temporary file."""
        if self.content is not None:
            self.content.close()


class _Failed(Exception):
    """One attempt's problem, already phrased for the operator."""

    def __init__(self, message: str, *, retry: bool = False, status: int | None = None,
                 received: int = 0):
        super().__init__(message)
        self.retry = retry
        self.status = status
        self.received = received


@dataclass
class _Answer:
    status: int
    content: Spool | None
    validator: Validator
    final_url: str


def _request_form(url: str, base: str | None = None) -> str:
    """A distribution point (``check_url``: BadInput if it is not one) as requested: scheme
    and host lower case, no fragment, at least "/" as the path, so redirect loops are found
    however a server spells the URL."""
    parts = urlsplit(check_url(url, base))
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/",
                       parts.query, ""))


# ---------------------------------------------------------------- many URLs


class Fetcher:
    """The fetches of one run in ``limits.parallelism`` threads, each result handed over as
    soon as it is complete (``next`` or iteration, in completion order). At most
    ``backlog`` results are in flight or waiting at once: a caller that falls behind stops
    the workers instead of piling up bodies. The caller closes each result it takes
    (``FetchResult.close``); leaving the ``with`` block stops what is still running and
    frees what was not taken."""

    def __init__(self, targets: Sequence[tuple[str, Validator]], *,
                 limits: FetchLimits = FetchLimits(), extra_trust_pem: bytes | None = None,
                 network: CrlNetwork = DIRECT, budget: MemoryBudget | None = None,
                 sleep=time.sleep, backlog: int | None = None):
        self._todo = deque(enumerate(targets))
        self.remaining = len(self._todo)
        workers = max(1, min(limits.parallelism, len(self._todo)))
        self._run = _Run(limits, sleep, budget or MemoryBudget(limits.memory_bytes), network,
                         _Sessions(_trust_context(extra_trust_pem), network))
        self._done: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(backlog or 2 * workers)
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"crl-fetch-{n}",
                                          daemon=True) for n in range(workers)]
        self._started = False

    def __enter__(self) -> Fetcher:
        if self._todo:
            for thread in self._threads:
                thread.start()
            self._started = True
        return self

    def __exit__(self, *exc_info) -> None:
        self._run.stop.set()
        for thread in self._threads if self._started else ():
            thread.join(self._run.limits.connect_timeout + self._run.limits.read_timeout)
        while True:
            try:
                self._done.get_nowait()[1].close()
            except queue.Empty:
                break
        self._run.sessions.close()

    def next(self, timeout: float | None = None) -> tuple[int, FetchResult] | None:
        """(index in ``targets``, result) of the next completed fetch; None once every
        result has been handed over; ``queue.Empty`` if none completes within ``timeout``."""
        if self.remaining == 0:
            return None
        index, result = self._done.get(timeout=timeout)
        self.remaining -= 1
        self._slots.release()
        return index, result

    def __iter__(self) -> Iterator[FetchResult]:
        while (item := self.next()) is not None:
            yield item[1]

    def _work(self) -> None:
        run = self._run
        while not run.stop.is_set():
            if not self._slots.acquire(timeout=0.2):
                continue
            with self._lock:
                if not self._todo:
                    self._slots.release()
                    return
                index, (url, validator) = self._todo.popleft()
            result = _fetch(url, validator, run)
            if run.stop.is_set():
                result.close()
                return
            self._done.put((index, result))


def fetch_each(targets: Sequence[tuple[str, Validator]], **kwargs) -> Iterator[FetchResult]:
    """Results in completion order, each closed by the caller (see ``Fetcher``)."""
    with Fetcher(targets, **kwargs) as fetcher:
        yield from fetcher


def fetch_all(targets: Sequence[tuple[str, Validator]], *, limits: FetchLimits = FetchLimits(),
              extra_trust_pem: bytes | None = None, sleep=time.sleep,
              network: CrlNetwork = DIRECT) -> list[FetchResult]:
    """Every (url, validator), results in input order with their bodies as bytes: for a
    handful of URLs (tests, tools); the refresh takes results as they come (``Fetcher``).
    Never raises for a per-URL problem; BadInput only if ``extra_trust_pem`` cannot be
    loaded at all."""
    if not targets:
        return []
    results: list[FetchResult | None] = [None] * len(targets)
    with Fetcher(targets, limits=limits, extra_trust_pem=extra_trust_pem, sleep=sleep,
                 network=network) as fetcher:
        while (item := fetcher.next()) is not None:
            index, result = item
            if result.content is not None:
                result.body = result.content.read()
                result.close()
                result.content = None
            results[index] = result
    return results


@dataclass
class _Run:
    """What the worker threads of one Fetcher share."""

    limits: FetchLimits
    sleep: object
    budget: MemoryBudget
    network: CrlNetwork
    sessions: _Sessions
    stop: threading.Event = field(default_factory=threading.Event)
    _internal: dict = field(default_factory=dict)  # host -> is it internal (per run)

    def internal_point(self, url: str) -> bool:
        """Whether a configured point is itself in an internal network: every address of
        its host is (then it may lead anywhere there, as the operator chose it). A name with
        one public address counts as public, whatever else its owner adds to it, and so does
        a name that does not resolve here (a proxy may resolve it)."""
        host = urlsplit(url).hostname or ""
        if host not in self._internal:
            try:
                self._internal[host] = all(internal_kind(a) for a in _resolve(host, 0))
            except (OSError, UnicodeError, ValueError):
                self._internal[host] = False
        return self._internal[host]


# ---------------------------------------------------------------- one URL


def _fetch(url: str, validator: Validator, run: _Run) -> FetchResult:
    """All attempts for one URL, retried with backoff while the deadline allows."""
    started = time.monotonic()
    deadline = started + run.limits.total_timeout
    shown = short_url(url)
    try:
        normal = _request_form(url)
        guarded = not run.internal_point(normal)
        attempt = 0
        while True:
            try:
                answer = _attempt(run, normal, validator, deadline, guarded)
            except _Failed as failed:
                pause = run.limits.backoff * 2**attempt
                if (not failed.retry or attempt >= run.limits.retries or run.stop.is_set()
                        or time.monotonic() + pause >= deadline):
                    return _error(url, shown, str(failed), failed.status, failed.received,
                                  started)
                run.sleep(pause)
                attempt += 1
                continue
            outcome = "not_modified" if answer.status == 304 else "fetched"
            size = answer.content.size if answer.content is not None else 0
            return FetchResult(url, outcome, answer.status, None, answer.validator, size,
                               None, answer.final_url, time.monotonic() - started,
                               answer.content)
    except BadInput as exc:
        return _error(url, shown, str(exc), None, 0, started)
    except Exception as exc:  # noqa: BLE001 - one URL must not stop the others
        log.exception("CRL fetch: internal error on %s", shown,
                      extra={"distribution_point": shown})
        return _error(url, shown, f"unexpected error fetching {shown} "
                      f"({type(exc).__name__}); see the log", None, 0, started)


def _error(url: str, shown: str, message: str, status: int | None, received: int,
           started: float) -> FetchResult:
    # No library saw a URL with a password (check_url refuses them before any request), so
    # no message can quote one; ``shown`` hides it in the refusal's own result too.
    return FetchResult(url, "error", status, None, Validator(), received, message,
                       safe_url(url), time.monotonic() - started)


def _attempt(run: _Run, url: str, validator: Validator, deadline: float,
             guarded: bool) -> _Answer:
    """One GET, following redirects by hand."""
    chain = [url]
    while True:
        response = _get(run, chain, validator, deadline, guarded)
        try:
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return _answer(run, response, chain[-1], validator, deadline)
            _drain(response, deadline)
        finally:
            response.close()
        chain.append(_redirect_target(run, chain, location, guarded))


def _redirect_target(run: _Run, chain: list[str], location: str, guarded: bool) -> str:
    try:
        target = _request_form(location, base=chain[-1])
    except BadInput as exc:
        raise _Failed(f"{short_url(chain[-1])} redirects to a URL that is not followed: "
                      f"{exc}") from None
    if target in chain:
        raise _Failed("redirect loop: " + " -> ".join(short_url(u) for u in [*chain, target]))
    if len(chain) > run.limits.max_redirects:
        raise _Failed(f"more than {run.limits.max_redirects} redirects from "
                      f"{short_url(chain[0])}")
    if guarded:
        host = urlsplit(target).hostname or ""
        try:
            _Guard(run.network).addresses(host, 0)
        except InternalAddress as exc:
            raise _Failed(f"{short_url(chain[-1])} redirects to {short_url(target)}, "
                          f"{exc.which}: redirects into {_INTERNAL_NETWORKS} are not followed "
                          f"from a distribution point outside them {_EXCEPTIONS}") from None
        except (OSError, UnicodeError):
            pass  # the connection says so (or, through a proxy, the proxy resolves it)
    return target


_INTERNAL_NETWORKS = "loopback, private, link-local or unique-local networks"
_EXCEPTIONS = "(PKIQ_CRL_ALLOW_INTERNAL lists exceptions)"


def _get(run: _Run, chain: list[str], validator: Validator, deadline: float,
         guarded: bool) -> requests.Response:
    url = chain[-1]
    headers = {}
    if validator.etag:
        headers["If-None-Match"] = validator.etag
    if validator.last_modified:
        headers["If-Modified-Since"] = validator.last_modified
    left = _time_left(run, deadline, url, 0)
    limits = run.limits
    connect, read = min(limits.connect_timeout, left), min(limits.read_timeout, left)
    proxy = run.network.proxy_for(url)
    proxies = {"http": proxy, "https": proxy} if proxy else {}
    session = run.sessions.get(guarded)
    try:
        return session.get(url, headers=headers, stream=True, allow_redirects=False,
                           timeout=(connect, read), proxies=proxies)
    except requests.exceptions.ProxyError as exc:
        raise _proxy_failure(proxy, url, exc) from None
    except requests.exceptions.SSLError as exc:
        raise _Failed(_tls_problem(url, exc)) from None
    except requests.exceptions.ConnectTimeout:
        raise _Failed(f"no connection to {_host_port(url)} within {connect:.3g} s",
                      retry=True) from None
    except requests.exceptions.ReadTimeout:
        raise _Failed(f"no answer from {short_url(url)} within {read:.3g} s (read timeout)",
                      retry=True) from None
    except requests.exceptions.ConnectionError as exc:
        internal = find_cause(exc, InternalAddress)
        if internal is not None:
            raise _Failed(f"{_host_port(url)} {internal.which}: pkiq does not connect into "
                          f"{_INTERNAL_NETWORKS} for a distribution point outside them "
                          f"{_EXCEPTIONS}") from None
        raise _Failed(f"cannot connect to {_host_port(url)}: {_reason(exc)}",
                      retry=True) from None
    except requests.exceptions.RequestException as exc:
        raise _Failed(f"request to {short_url(url)} failed: {_reason(exc)}") from None


def _answer(run: _Run, response: requests.Response, url: str, validator: Validator,
            deadline: float) -> _Answer:
    status = response.status_code
    got = Validator(response.headers.get("ETag"), response.headers.get("Last-Modified"))
    if status == 304:
        # A 304 need not repeat the validators (RFC 9110 15.4.5); keep ours if it does not.
        kept = Validator(got.etag or validator.etag,
                         got.last_modified or validator.last_modified)
        _drain(response, deadline)
        return _Answer(status, None, kept, safe_url(url))
    if status != 200:
        _drain(response, deadline)
        raise _Failed(f"HTTP {status}{_phrase(status)} from {short_url(url)}",
                      retry=status >= 500, status=status)
    return _Answer(status, _read_body(run, response, url, deadline), got, safe_url(url))


def _phrase(status: int) -> str:
    """The standard reason phrase, not the server's (which is text it chose)."""
    try:
        return f" ({http.HTTPStatus(status).phrase})"
    except ValueError:
        return ""


# ---------------------------------------------------------------- the body


def _read_body(run: _Run, response: requests.Response, url: str, deadline: float) -> Spool:
    """The body as received (no Content-Encoding undone) into a spool, read one socket read
    at a time so that the deadline and the cap are checked even while a server drips
    single bytes or never stops."""
    limits = run.limits
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise _Failed(f"{short_url(url)} announces {int(declared):,} bytes (Content-Length), "
                      f"more than the limit of {limits.max_bytes:,}", status=200)
    spool = Spool(run.budget)
    try:
        while True:
            _time_left(run, deadline, url, spool.size, status=200)
            chunk = _read1(response, url, limits, spool.size)
            if not chunk:
                return spool
            if spool.size + len(chunk) > limits.max_bytes:
                raise _Failed(f"the body from {short_url(url)} exceeds the limit of "
                              f"{limits.max_bytes:,} bytes", status=200,
                              received=spool.size + len(chunk))
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise


def _read1(response: requests.Response, url: str, limits: FetchLimits, received: int) -> bytes:
    try:
        return response.raw.read1(_CHUNK, decode_content=False)
    except urllib3.exceptions.ReadTimeoutError:
        raise _Failed(f"{short_url(url)} stopped sending for {limits.read_timeout:g} s after "
                      f"{received:,} bytes (read timeout)", retry=True, status=200,
                      received=received) from None
    except urllib3.exceptions.ProtocolError as exc:
        raise _Failed(f"the connection to {_host_port(url)} broke after {received:,} bytes of "
                      f"the body from {short_url(url)} (truncated: {_reason(exc)})",
                      retry=True, status=200, received=received) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _Failed(f"reading the body from {short_url(url)} failed after {received:,} "
                      f"bytes: {_reason(exc)}", retry=True, status=200,
                      received=received) from None


def _drain(response: requests.Response, deadline: float) -> None:
    """Read a small unwanted body to its end so the connection can be reused; a bigger or
    slower one is left for close() to discard with its connection."""
    left = _DRAIN
    try:
        while left > 0 and time.monotonic() < deadline:
            chunk = response.raw.read1(_CHUNK, decode_content=False)
            if not chunk:
                return
            left -= len(chunk)
    except (urllib3.exceptions.HTTPError, OSError):
        return


def _time_left(run: _Run, deadline: float, url: str, received: int,
               status: int | None = None) -> float:
    if run.stop.is_set():
        raise _Failed(f"the refresh stopped before {short_url(url)} was fetched",
                      status=status, received=received)
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Failed(f"{short_url(url)} did not complete within "
                      f"{run.limits.total_timeout:g} s (total timeout; {received:,} bytes "
                      "received)", status=status, received=received)
    return left


# ---------------------------------------------------------------- internal networks


def internal_kind(address: str) -> str | None:
    """What kind of internal address ``address`` is, or None for a public one. An
    IPv4-mapped IPv6 address counts as the IPv4 address it carries."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL:
        return "a unique-local address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "an address that is not publicly routed"
    return None


_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


class InternalAddress(OSError):
    """A host resolves to an internal address it may not be reached at."""

    def __init__(self, host: str, address: str, kind: str):
        literal = host.strip("[]") == address
        self.which = (f"which is {kind}" if literal
                      else f"which resolves to {address}, {kind}")
        super().__init__(f"{host} {self.which}")


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class _Guard:
    network: CrlNetwork

    def addresses(self, host: str, port: int) -> list[str]:
        """Every address of ``host``, or InternalAddress if any is internal and not allowed
        (a name with one public and one internal address is refused: which one a
        connection gets is not ours to choose)."""
        found = _resolve(host, port)
        for address in found:
            kind = internal_kind(address)
            if kind and not self.network.internal_allowed(host, address):
                raise InternalAddress(host, address, kind)
        return found


class _PinnedMixin:
    """Connects to the addresses the guard checked, and only to them: resolving once, for
    the check and the connection together, leaves no moment for a name to be re-pointed
    (DNS rebinding). TLS still verifies the certificate for the host name."""

    guard: _Guard

    def _new_conn(self) -> socket.socket:
        try:
            addresses = self.guard.addresses(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise urllib3.exceptions.NameResolutionError(self.host, self, exc) from exc
        except InternalAddress as exc:
            raise urllib3.exceptions.NewConnectionError(self, str(exc)) from exc
        problem: OSError | None = None
        for address in addresses:
            try:
                return urllib3_connection.create_connection(
                    (address, self.port), self.timeout, source_address=self.source_address,
                    socket_options=self.socket_options)
            except TimeoutError as exc:
                raise urllib3.exceptions.ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out") from exc
            except OSError as exc:
                problem = exc
        raise urllib3.exceptions.NewConnectionError(
            self, f"Failed to establish a new connection: {problem}") from problem


def _pinned_pools(guard: _Guard) -> dict:
    """urllib3 pool classes whose connections go through ``guard``."""
    plain = type("PinnedHTTPConnection", (_PinnedMixin, HTTPConnection), {"guard": guard})
    tls = type("PinnedHTTPSConnection", (_PinnedMixin, HTTPSConnection), {"guard": guard})
    return {"http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
            "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": tls})}


# ---------------------------------------------------------------- messages


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{host}:{port}"


def _tls_problem(url: str, exc: BaseException) -> str:
    """The guide: an HTTPS distribution point must itself have a valid certificate."""
    unverified = find_cause(exc, ssl.SSLCertVerificationError)
    if unverified is not None:
        return (f"TLS certificate of {_host_port(url)} is not trusted: "
                f"{unverified.verify_message}")
    problem = find_cause(exc, ssl.SSLError)
    if problem is not None and problem.reason:
        said = problem.reason.replace("_", " ").lower()
        return f"TLS handshake with {_host_port(url)} failed: {said}"
    return f"TLS handshake with {_host_port(url)} failed: {_reason(exc)}"


def _proxy_failure(proxy: str | None, url: str, exc: BaseException) -> _Failed:
    """A proxy that cannot be reached (retried), or that refuses the tunnel (not: it will
    refuse again). Its status is read from http.client's message, its words not quoted."""
    where = _host_port(proxy) if proxy else "the proxy"
    refused = re.search(r"Tunnel connection failed: (\d{3})", " ".join(
        str(e) for e in causes(exc)))
    if refused:
        status = int(refused[1])
        return _Failed(f"the proxy {where} refused the connection to {_host_port(url)}: "
                       f"HTTP {status}{_phrase(status)}")
    return _Failed(f"cannot reach {short_url(url)} through the proxy {where}: "
                   f"{_reason(exc)}", retry=True)


def _reason(exc: BaseException) -> str:
    """The innermost cause in words, quoting nothing a server sent: a non-HTTP service's
    first line (http.client's BadStatusLine) or a bad chunk header (urllib3's
    InvalidChunkLength) carry the other side's bytes in their messages."""
    chain = causes(exc)
    for kind, words in _REASONS:
        if any(isinstance(e, kind) for e in chain):
            return words
    unresolved = find_cause(exc, socket.gaierror)
    if unresolved is not None:
        return f"the host name does not resolve ({unresolved.strerror})"
    for cause in reversed(chain):
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
    return f"{type(chain[-1]).__name__}"


_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (http.client.RemoteDisconnected, "the server closed the connection without answering"),
    (http.client.LineTooLong, "the answer has a line too long to be HTTP"),
    (http.client.BadStatusLine, "the answer is not HTTP (another kind of service there?)"),
    (urllib3.exceptions.InvalidChunkLength, "a damaged chunked body"),
    (http.client.IncompleteRead, "the body ends before its announced length"),
    (ConnectionResetError, "the connection was reset"),
    (ConnectionAbortedError, "the connection was aborted"),
    (TimeoutError, "timed out"),
    (urllib3.exceptions.LocationParseError, "a malformed URL"),
    (urllib3.exceptions.HeaderParsingError, "malformed headers"),
    (http.client.HTTPException, "the answer is not valid HTTP"),
)


# ---------------------------------------------------------------- plumbing


class _Sessions:
    """One requests.Session per worker thread and kind (connections pinned to checked
    public addresses, or not, for points that are internal themselves): keep-alive without
    sharing a session across threads (requests does not promise that is safe), and a
    connection made for an internal point is never reused for a public one. All are
    closed at the end."""

    def __init__(self, context: ssl.SSLContext, network: CrlNetwork):
        self._context = context
        self._pinned = _pinned_pools(_Guard(network))
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[requests.Session] = []

    def get(self, guarded: bool) -> requests.Session:
        mine = getattr(self._local, "sessions", None)
        if mine is None:
            mine = self._local.sessions = {}
        session = mine.get(guarded)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy, netrc or CA bundle from the environment
            session.headers.update({"User-Agent": USER_AGENT, "Accept": "*/*",
                                    "Accept-Encoding": "identity"})
            adapter = _TrustAdapter(self._context, self._pinned if guarded else None)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            mine[guarded] = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._all:
                session.close()


def _trust_context(extra_trust_pem: bytes | None) -> ssl.SSLContext:
    """System CAs plus the trusted CA list, loaded once per run and shared by every
    connection (loading a CA file costs tens of milliseconds; urllib3 would repeat it for
    each new connection if given a ``verify=`` path)."""
    cafile = ssl.get_default_verify_paths().cafile
    system = cafile if cafile and os.path.isfile(cafile) else certifi.where()
    context = ssl.create_default_context(cafile=system)
    if extra_trust_pem and extra_trust_pem.strip():
        try:
            context.load_verify_locations(cadata=extra_trust_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise BadInput(f"the trusted CA list cannot be used for HTTPS: {exc}") from None
    return context


class _TrustAdapter(HTTPAdapter):
    """HTTPAdapter whose HTTPS connections verify against ``context`` (through a proxy's
    CONNECT tunnel too) and, given ``pools``, connect through them; no retries of its own
    (``_fetch`` retries with backoff and a deadline)."""

    def __init__(self, context: ssl.SSLContext, pools: dict | None):
        self._context = context
        self._pools = pools
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)
        if self._pools:
            self.poolmanager.pool_classes_by_scheme = self._pools

    def proxy_manager_for(self, proxy: str, **proxy_kwargs):
        proxy_kwargs.setdefault("ssl_context", self._context)
        return super().proxy_manager_for(proxy, **proxy_kwargs)
