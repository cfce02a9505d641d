"""An Expressway's REST API over verified HTTPS: certificates read back and pushed, the
RAML asked first, a restart only when called for, and a plain TLS handshake to see which
certificate the node presents.

Built on urllib3 rather than requests, because pinning needs what requests hides: a pinned
node is checked by urllib3's ``assert_fingerprint`` (SHA-256 of the certificate it
presents), an unpinned one by the node's trusted list plus the system CAs with the node's
FQDN as the name to match, whatever address is dialled. There is no third way: no call here
turns verification off.

Every answer is bounded (``MAX_ANSWER`` bytes, ``timeout`` seconds to connect and per
read); errors say which node and which call, with the node's own message for a 4xx, and
never carry the password (it travels only in the Authorization header).
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.errors import PkiqError
from ca.expressway_api import (
    ApiProfile,
    certificates_in,
    described_paths,
    describes,
    message_of,
    restart_required,
    warnings_of,
)
from ca.trust import fingerprint

MAX_ANSWER = 4 * 1024 * 1024
CALL_TIMEOUTS = 4  # a whole call (connect, send, the whole answer): 4 x the timeout


class NodeApiError(PkiqError):
    """A call to a node failed. ``transient``: worth another try later (no answer, a 5xx)."""

    transient = False
    status: int | None = None


class NodeRefused(NodeApiError):
    """The node answered 4xx: its own message says why; trying again changes nothing."""

    exit_code = 10
    http_status = 502

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class EndpointMissing(NodeRefused):
    """The node's RAML does not describe a call pkiq needs (another release's names)."""


class NodeUnreachable(NodeApiError):
    """No answer (refused, reset, timed out) or a 5xx: tried again with backoff."""

    exit_code = 11
    http_status = 504
    transient = True

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class NodeUntrusted(NodeApiError):
    """The node's HTTPS certificate is not one pkiq may trust: not retried (a retry would
    meet the same certificate); an operator pins it or adds its CA."""

    exit_code = 12
    http_status = 502


@dataclass(frozen=True)
class NodeEndpoint:
    """Where and how to reach one node. ``trusted_pem``: the node's trusted CA list, added
    to the system CAs; ``pins``: SHA-256 fingerprints (lower-case hex) accepted instead of a
    verified chain."""

    fqdn: str
    address: str
    port: int
    username: str
    password: str = field(repr=False)
    profile: ApiProfile
    trusted_pem: bytes = b""
    pins: tuple[str, ...] = ()
    timeout: float = 15.0

    @property
    def where(self) -> str:
        return f"https://{self.fqdn}:{self.port}" + (
            f" (at {self.address})" if self.address != self.fqdn else "")


def tls_context(endpoint: NodeEndpoint) -> ssl.SSLContext:
    """System CAs plus the node's trusted list; TLS 1.2 at least. With pins the chain is
    not checked here: urllib3 (or ``presented_certificate``) compares the fingerprint."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if endpoint.trusted_pem.strip():
        context.load_verify_locations(cadata=endpoint.trusted_pem.decode("ascii", "replace"))
    if endpoint.pins:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str


class NodeApi:
    """One node's REST API. A new connection pool per instance: the trust settings are
    the node's own."""

    def __init__(self, endpoint: NodeEndpoint):
        self.endpoint = endpoint
        token = base64.b64encode(f"{endpoint.username}:{endpoint.password}".encode()).decode()
        self._auth = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self._described: set[tuple[str, str]] | None = None
        self._pool_made: urllib3.HTTPSConnectionPool | None = None

    def _pool(self) -> urllib3.HTTPSConnectionPool:
        """Made on first use and again after a restart (the node may present another
        certificate then). Pinned: urllib3 checks the one pin the node presents (with two
        accepted, the one it presents now is found by a handshake first)."""
        if self._pool_made is None:
            endpoint = self.endpoint
            pool_kw = dict(ssl_context=tls_context(endpoint), server_hostname=endpoint.fqdn,
                           timeout=urllib3.Timeout(connect=endpoint.timeout,
                                                   read=endpoint.timeout),
                           retries=False, maxsize=1)
            if endpoint.pins:
                pin = endpoint.pins[0] if len(endpoint.pins) == 1 else \
                    fingerprint(self.presented_certificate())
                pool_kw.update(cert_reqs="CERT_NONE", assert_fingerprint=pin)
            else:
                pool_kw.update(cert_reqs="CERT_REQUIRED", assert_hostname=endpoint.fqdn)
            self._pool_made = urllib3.HTTPSConnectionPool(endpoint.address, endpoint.port,
                                                          **pool_kw)
        return self._pool_made

    def close(self) -> None:
        if self._pool_made is not None:
            self._pool_made.close()
            self._pool_made = None

    def __enter__(self) -> NodeApi:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ calls

    def _call(self, method: str, path: str, what: str, *, fields: dict | None = None
              ) -> Answer:
        headers = dict(self._auth)
        body = None
        if fields is not None:
            body, content_type = urllib3.encode_multipart_formdata(fields)
            headers["Content-Type"] = content_type
        limit = self.endpoint.timeout * CALL_TIMEOUTS
        try:
            response = self._pool().urlopen(method, path, body=body, headers=headers,
                                            preload_content=False, redirect=False)
            try:
                data = _bounded(response, time.monotonic() + limit)
            finally:
                response.release_conn()
        except _TooBig as exc:
            raise NodeRefused(f"{self.endpoint.where}: {what}: {exc}: refused") from None
        except _TooSlow:
            raise NodeUnreachable(f"{self.endpoint.where}: {what}: no whole answer within "
                                  f"{limit:g} s") from None
        except urllib3.exceptions.SSLError as exc:
            if _verification_failed(exc):
                raise self._tls_error(exc) from None
            hint = " (is that port HTTPS?)" if "WRONG_VERSION_NUMBER" in str(exc) else ""
            raise NodeUnreachable(f"{self.endpoint.where}: {what}: TLS failed: "
                                  f"{_reason(exc)}{hint}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise NodeUnreachable(f"{self.endpoint.where}: {what} got no answer: "
                                  f"{_reason(exc)}") from None
        answer = Answer(response.status, data, response.headers.get("Content-Type", ""))
        if response.status == 401:
            raise NodeRefused(f"{self.endpoint.where} refused the credentials of "
                              f"{self.endpoint.username!r} (401) for {what}: "
                              f"{message_of(data) or 'no message'}", 401)
        if response.status >= 500 or response.status in (408, 429):
            raise NodeUnreachable(f"{self.endpoint.where}: {what} failed with "
                                  f"{response.status}: {message_of(data) or 'no message'}",
                                  response.status)
        if response.status >= 400 or response.status in (301, 302, 303, 307, 308):
            raise NodeRefused(f"{self.endpoint.where} refused {what} ({response.status}): "
                              f"{message_of(data) or 'no message'}", response.status)
        return answer

    def _tls_error(self, exc: Exception) -> NodeUntrusted:
        text = _reason(exc)
        if self.endpoint.pins:
            hint = ("the node presents a certificate whose SHA-256 is not the pinned one: if "
                    "it was replaced on purpose, pin the new one (pkiq node api pin "
                    f"{self.endpoint.fqdn})")
        else:
            hint = ("its certificate does not chain to the node's trusted list or the system "
                    f"CAs for the name {self.endpoint.fqdn}: add its CA, or pin it after "
                    f"checking it (pkiq node api pin {self.endpoint.fqdn})")
        return NodeUntrusted(f"{self.endpoint.where}: TLS verification failed ({text}); {hint}")

    def described(self) -> set[tuple[str, str]] | None:
        """The calls the node's RAML describes; None when the profile skips the check."""
        path = self.endpoint.profile.paths["raml"]
        if not path:
            return None
        if self._described is None:
            try:
                answer = self._call("GET", path, f"GET {path}")
            except NodeRefused as exc:
                if exc.status == 404:
                    raise EndpointMissing(
                        f"{self.endpoint.where} does not serve its API description at {path} "
                        "(404): set the release's path with --endpoint raml=PATH, or "
                        "--endpoint raml= to go without the check", 404) from None
                raise
            self._described = described_paths(answer.body)
        return self._described

    def require(self, *calls: tuple[str, str]) -> None:
        """Refuse before anything is changed when the node does not describe a call."""
        described = self.described()
        if described is None:
            return
        paths = self.endpoint.profile.paths
        missing = [f"{method} {paths[name]}" for method, name in calls
                   if not paths[name] or not describes(described, method, paths[name])]
        if missing:
            raise EndpointMissing(
                f"{self.endpoint.where} does not describe {', '.join(missing)} in its "
                f"{paths['raml']}: its release names them differently; set them with "
                f"pkiq node api set {self.endpoint.fqdn} --endpoint NAME=PATH "
                "(or --release)")

    def server_certificates(self) -> list[x509.Certificate]:
        path = self.endpoint.profile.paths["server"]
        answer = self._call("GET", path, f"reading the server certificate (GET {path})")
        return certificates_in(answer.body, answer.content_type)

    def trusted_certificates(self) -> list[x509.Certificate]:
        path = self.endpoint.profile.paths["trusted"]
        answer = self._call("GET", path, f"reading the trusted CA list (GET {path})")
        return certificates_in(answer.body, answer.content_type)

    def add_trusted(self, cert: x509.Certificate) -> None:
        path = self.endpoint.profile.paths["trusted"]
        pem = cert.public_bytes(serialization.Encoding.PEM)
        self._call("POST", path, f"adding CA {cert.subject.rfc4514_string()} (POST {path})",
                   fields={self.endpoint.profile.fields["ca_field"]:
                           ("ca.pem", pem, "application/x-pem-file")})

    def remove_trusted(self, cert: x509.Certificate) -> None:
        path = self.endpoint.profile.paths["trusted_delete"].replace(
            "{fingerprint}", fingerprint(cert))
        self._call("DELETE", path, f"removing CA {cert.subject.rfc4514_string()} "
                   f"(DELETE {path})")

    def put_server(self, cert_pem: bytes, key_pem: bytes) -> tuple[bool, list[str]]:
        """Upload the server certificate (with its chain) and key; (restart needed, the
        node's warnings)."""
        path = self.endpoint.profile.paths["server"]
        fields = self.endpoint.profile.fields
        answer = self._call(
            "POST", path, f"uploading the server certificate (POST {path})",
            fields={fields["cert_field"]: ("server.pem", cert_pem, "application/x-pem-file"),
                    fields["key_field"]: ("privkey.pem", key_pem, "application/x-pem-file")})
        needed = restart_required(answer.body)
        return (True if needed is None else needed), warnings_of(answer.body)

    def restart(self) -> None:
        path = self.endpoint.profile.paths["restart"]
        self._call("POST", path, f"restarting (POST {path})")
        self.close()

    def presented_certificate(self) -> x509.Certificate:
        """The certificate the node's HTTPS port presents now, checked as the API calls
        are (pins, or the trusted list with the FQDN)."""
        context = tls_context(self.endpoint)
        try:
            with socket.create_connection((self.endpoint.address, self.endpoint.port),
                                          timeout=self.endpoint.timeout) as raw, \
                    context.wrap_socket(raw, server_hostname=self.endpoint.fqdn) as tls:
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLCertVerificationError as exc:
            raise self._tls_error(exc) from None
        except (OSError, ssl.SSLError) as exc:
            raise NodeUnreachable(f"{self.endpoint.where}: no TLS handshake: {_reason(exc)}"
                                  ) from None
        if not der:
            raise NodeUnreachable(f"{self.endpoint.where} presented no certificate")
        cert = x509.load_der_x509_certificate(der)
        if self.endpoint.pins and fingerprint(cert) not in self.endpoint.pins:
            raise self._tls_error(Exception(f"presented SHA-256 {fingerprint(cert)}"))
        return cert


class _TooBig(Exception):
    pass


class _TooSlow(Exception):
    pass


def _bounded(response, deadline: float) -> bytes:
    """The body, at most MAX_ANSWER bytes and read by ``deadline``: urllib3's read timeout
    bounds each read, not the answer, so a node dripping a byte a second is cut here."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_ANSWER:
        raise _TooBig(f"an answer of {int(declared):,} bytes is over the limit of "
                      f"{MAX_ANSWER:,}")
    chunks, size = [], 0
    for chunk in response.stream(65536):
        size += len(chunk)
        if size > MAX_ANSWER:
            raise _TooBig(f"an answer over {MAX_ANSWER:,} bytes")
        if time.monotonic() > deadline:
            raise _TooSlow
        chunks.append(chunk)
    return b"".join(chunks)


def _verification_failed(exc: BaseException) -> bool:
    """Whether a TLS failure is the node's certificate being refused (not trusted, another
    name, not the pinned one), as opposed to a connection cut during the handshake."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError | ssl.CertificateError):
            return True
        text = str(seen)
        if "Fingerprints did not match" in text or "CERTIFICATE_VERIFY_FAILED" in text:
            return True
        inner = getattr(seen, "reason", None)
        seen = inner if isinstance(inner, BaseException) else (seen.__cause__
                                                                or seen.__context__)
    return False


def _reason(exc: BaseException) -> str:
    """The innermost cause, in one line: urllib3 wraps the socket error twice."""
    seen = exc
    for _ in range(5):
        inner = getattr(seen, "reason", None)
        if not isinstance(inner, BaseException):
            inner = seen.__context__
        if inner is None or inner is seen:
            break
        seen = inner
    text = str(seen) or type(seen).__name__
    return " ".join(text.split())[:300]


def probe_certificate(address: str, port: int, server_name: str, timeout: float
                      ) -> x509.Certificate:
    """The certificate a host presents, unverified: only for ``pkiq node api pin``, which
    shows its fingerprint to a person who compares it with the node's console before
    anything is trusted."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise NodeUnreachable(f"https://{server_name}:{port}: no TLS handshake: "
                              f"{_reason(exc)}") from None
    return x509.load_der_x509_certificate(der)


Connector = Callable[[NodeEndpoint], NodeApi]
