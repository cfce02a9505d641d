"""Fetching CRLs from HTTP(S) distribution points, bounded in time, size and redirects.

The nightly refresh asks many servers it does not control for files it must not trust, so
every fetch has a deadline and a byte cap that hold while the body streams, redirects are
followed by hand (only to what ``ca.crl_config.check_url`` accepts as a distribution point,
counted, loops named), and HTTPS servers are verified
against the system CAs plus the trusted CA list. Per-URL problems come back as results with
one readable sentence, never as exceptions. The body is returned as received: decoding and
validation are ``ca.crl_decode`` and ``ca.crl_install``.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import certifi
import requests
import urllib3
from requests.adapters import HTTPAdapter

from ca.crl_config import check_url, safe_url
from ca.errors import BadInput

from .causes import causes, find_cause

USER_AGENT = "pkiq-crl-fetch/0.1"
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_DRAIN = 64 * 1024  # read this much of a redirect or error body to keep the connection


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
    body: bytes | None  # set when fetched
    validator: Validator  # from the response headers (for the next conditional GET)
    bytes_received: int
    error: str | None  # one clear sentence when outcome == "error"
    final_url: str  # after redirects, credentials hidden
    elapsed: float


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
    body: bytes | None
    validator: Validator
    final_url: str


def _request_form(url: str, base: str | None = None) -> str:
    """A distribution point (``check_url``: BadInput if it is not one) as requested: scheme
    and host lower case, no fragment, at least "/" as the path, so redirect loops are found
    however a server spells the URL."""
    parts = urlsplit(check_url(url, base))
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/",
                       parts.query, ""))


def fetch_all(targets: Sequence[tuple[str, Validator]], *, limits: FetchLimits = FetchLimits(),
              extra_trust_pem: bytes | None = None, sleep=time.sleep) -> list[FetchResult]:
    """Fetch every (url, validator) in parallel; results in input order. Never raises for a
    per-URL problem; BadInput only if ``extra_trust_pem`` cannot be loaded at all."""
    if not targets:
        return []
    with _Sessions(_trust_context(extra_trust_pem)) as sessions:
        def one(target: tuple[str, Validator]) -> FetchResult:
            return _fetch(target[0], target[1], limits, sessions.get(), sleep)

        workers = max(1, min(limits.parallelism, len(targets)))
        with ThreadPoolExecutor(workers, thread_name_prefix="crl-fetch") as pool:
            return list(pool.map(one, targets))


# ---------------------------------------------------------------- one URL


def _fetch(url: str, validator: Validator, limits: FetchLimits, session: requests.Session,
           sleep) -> FetchResult:
    """All attempts for one URL, retried with backoff while the deadline allows."""
    started = time.monotonic()
    deadline = started + limits.total_timeout
    shown = safe_url(url)
    try:
        normal = _request_form(url)
        attempt = 0
        while True:
            try:
                answer = _attempt(session, normal, validator, limits, deadline)
            except _Failed as failed:
                pause = limits.backoff * 2**attempt
                if (not failed.retry or attempt >= limits.retries
                        or time.monotonic() + pause >= deadline):
                    return _error(url, shown, str(failed), failed.status, failed.received,
                                  started)
                sleep(pause)
                attempt += 1
                continue
            outcome = "not_modified" if answer.status == 304 else "fetched"
            size = len(answer.body) if answer.body is not None else 0
            return FetchResult(url, outcome, answer.status, answer.body, answer.validator, size,
                               None, answer.final_url, time.monotonic() - started)
    except BadInput as exc:
        return _error(url, shown, str(exc), None, 0, started)
    except Exception as exc:  # noqa: BLE001 - one URL must not stop the others
        return _error(url, shown, f"unexpected error fetching {shown}: "
                      f"{type(exc).__name__}: {exc}", None, 0, started)


def _error(url: str, shown: str, message: str, status: int | None, received: int,
           started: float) -> FetchResult:
    # No library saw a URL with a password (check_url refuses them before any request), so
    # no message can quote one; ``shown`` hides it in the refusal's own result too.
    return FetchResult(url, "error", status, None, Validator(), received, message, shown,
                       time.monotonic() - started)


def _attempt(session: requests.Session, url: str, validator: Validator, limits: FetchLimits,
             deadline: float) -> _Answer:
    """One GET, following redirects by hand."""
    chain = [url]
    while True:
        response = _get(session, chain[-1], validator, limits, deadline)
        try:
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return _answer(response, chain[-1], validator, limits, deadline)
            _drain(response, deadline)
        finally:
            response.close()
        chain.append(_redirect_target(chain, location, limits))


def _redirect_target(chain: list[str], location: str, limits: FetchLimits) -> str:
    try:
        target = _request_form(location, base=chain[-1])
    except BadInput as exc:
        raise _Failed(f"{safe_url(chain[-1])} redirects to a URL that is not followed: "
                      f"{exc}") from None
    if target in chain:
        raise _Failed("redirect loop: " + " -> ".join(safe_url(u) for u in [*chain, target]))
    if len(chain) > limits.max_redirects:
        raise _Failed(f"more than {limits.max_redirects} redirects from {safe_url(chain[0])}")
    return target


def _get(session: requests.Session, url: str, validator: Validator, limits: FetchLimits,
         deadline: float) -> requests.Response:
    headers = {}
    if validator.etag:
        headers["If-None-Match"] = validator.etag
    if validator.last_modified:
        headers["If-Modified-Since"] = validator.last_modified
    left = _time_left(deadline, url, limits, 0)
    connect, read = min(limits.connect_timeout, left), min(limits.read_timeout, left)
    try:
        return session.get(url, headers=headers, stream=True, allow_redirects=False,
                           timeout=(connect, read))
    except requests.exceptions.SSLError as exc:
        raise _Failed(_tls_problem(url, exc)) from None
    except requests.exceptions.ConnectTimeout:
        raise _Failed(f"no connection to {_host_port(url)} within {connect:.3g} s",
                      retry=True) from None
    except requests.exceptions.ReadTimeout:
        raise _Failed(f"no answer from {safe_url(url)} within {read:.3g} s (read timeout)",
                      retry=True) from None
    except requests.exceptions.ConnectionError as exc:
        raise _Failed(f"cannot connect to {_host_port(url)}: {_reason(exc)}",
                      retry=True) from None
    except requests.exceptions.RequestException as exc:
        raise _Failed(f"request to {safe_url(url)} failed: {_reason(exc)}") from None


def _answer(response: requests.Response, url: str, validator: Validator, limits: FetchLimits,
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
        reason = f" ({response.reason})" if response.reason else ""
        raise _Failed(f"HTTP {status}{reason} from {safe_url(url)}", retry=status >= 500,
                      status=status)
    return _Answer(status, _read_body(response, url, limits, deadline), got, safe_url(url))


# ---------------------------------------------------------------- the body


def _read_body(response: requests.Response, url: str, limits: FetchLimits,
               deadline: float) -> bytes:
    """The body as received (no Content-Encoding undone), read one socket read at a time so
    that the deadline is checked even while a server drips single bytes."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise _Failed(f"{safe_url(url)} announces {int(declared):,} bytes (Content-Length), "
                      f"more than the limit of {limits.max_bytes:,}", status=200)
    chunks: list[bytes] = []
    received = 0
    while True:
        _time_left(deadline, url, limits, received, status=200)
        chunk = _read1(response, url, limits, received)
        if not chunk:
            return b"".join(chunks)
        received += len(chunk)
        if received > limits.max_bytes:
            raise _Failed(f"the body from {safe_url(url)} exceeds the limit of "
                          f"{limits.max_bytes:,} bytes", status=200, received=received)
        chunks.append(chunk)


def _read1(response: requests.Response, url: str, limits: FetchLimits, received: int) -> bytes:
    try:
        return response.raw.read1(_CHUNK, decode_content=False)
    except urllib3.exceptions.ReadTimeoutError:
        raise _Failed(f"{safe_url(url)} stopped sending for {limits.read_timeout:g} s after "
                      f"{received:,} bytes (read timeout)", retry=True, status=200,
                      received=received) from None
    except urllib3.exceptions.ProtocolError as exc:
        raise _Failed(f"the connection to {_host_port(url)} broke after {received:,} bytes of "
                      f"the body from {safe_url(url)} (truncated: {_reason(exc)})", retry=True,
                      status=200, received=received) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _Failed(f"reading the body from {safe_url(url)} failed after {received:,} "
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


def _time_left(deadline: float, url: str, limits: FetchLimits, received: int,
               status: int | None = None) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Failed(f"{safe_url(url)} did not complete within {limits.total_timeout:g} s "
                      f"(total timeout; {received:,} bytes received)", status=status,
                      received=received)
    return left


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
    return f"TLS handshake with {_host_port(url)} failed: {problem or _reason(exc)}"


def _reason(exc: BaseException) -> str:
    """The innermost useful cause, without urllib3's pool and retry wrapping."""
    if find_cause(exc, ConnectionRefusedError):
        return "connection refused"
    unresolved = find_cause(exc, socket.gaierror)
    if unresolved is not None:
        return f"the host name does not resolve ({unresolved.strerror})"
    root = causes(exc)[-1]
    return str(root) or type(root).__name__


# ---------------------------------------------------------------- plumbing


class _Sessions:
    """One requests.Session per worker thread: keep-alive without sharing a session across
    threads (requests does not promise that is safe). All are closed at the end."""

    def __init__(self, context: ssl.SSLContext):
        self._context = context
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[requests.Session] = []

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy, netrc or CA bundle from the environment
            session.headers.update({"User-Agent": USER_AGENT, "Accept": "*/*",
                                    "Accept-Encoding": "identity"})
            adapter = _TrustAdapter(self._context)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def __enter__(self) -> _Sessions:
        return self

    def __exit__(self, *exc_info) -> None:
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
    """HTTPAdapter whose HTTPS connections verify against ``context``; no retries of its own
    (``_fetch`` retries with backoff and a deadline)."""

    def __init__(self, context: ssl.SSLContext):
        self._context = context
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)
