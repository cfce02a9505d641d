"""A fake Cisco Expressway REST API for certificates: a real HTTPS server on 127.0.0.1.

It holds what an Expressway holds (the server certificate and key, the trusted CA list, a
pending restart), answers the REST calls pkiq's publisher makes, under HTTP Basic auth, with
Expressway-like JSON errors, and behaves like the box at a restart: the uploaded certificate is
read back at once but TLS presents it only after ``POST /api/provisioning/restart``, and the
listener closes every connection for ``restart_downtime`` seconds first. Tests can change the
held state behind the client's back (``set_held``), make the next calls to a path fail
(``fail``) or drop the connection (``drop``), and read every request (``requests``, never with
a password).

Use the fixture from a test module by binding it to a module name (as with tests/httpd.py)::

    from . import fake_expressway as fx

    expressway = fx.expressway

    def test_x(expressway):
        requests.get(expressway.url + "/api/raml", auth=expressway.auth,
                     verify=expressway.ca_file)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
import time
from base64 import b64decode
from binascii import Error as Base64Error
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .httpd import HOST, LocalCa, make_ca
from .storepki import key_pem, pem

MAX_BODY = 1024 * 1024  # larger request bodies get 413
_DRAIN_LIMIT = 64 * MAX_BODY  # an oversized body is read (so the client sees the 413) up to this
SIP_TLS_MAX_RSA_BITS = 4096

# The Expressway-like messages, one place, so tests can compare with them.
MSG_AUTH = "Authentication failed"
MSG_BOTH_REQUIRED = "The certificate file and the private key file are both required"
MSG_BAD_CERT = "The server certificate is not a valid PEM certificate"
MSG_KEY_ENCRYPTED = "The private key is password protected: upload a key without a passphrase"
MSG_KEY_NEWLINE = "The private key file must end with a newline"
MSG_BAD_KEY = "The private key is not a valid PEM key"
MSG_KEY_MISMATCH = "The private key does not match the server certificate"
MSG_WILDCARD = "Wildcard certificates are not supported"
MSG_UPLOADED = ("Server certificate uploaded. A restart is required for the new certificate to "
                "take effect")
MSG_BAD_CA = "The file does not contain a valid PEM certificate"
MSG_CA_ADDED = "CA certificate(s) added"
MSG_CA_REMOVED = "CA certificate removed"
MSG_NO_CA = "No CA certificate with that fingerprint"
MSG_RESTARTING = "Restarting"
MSG_CSR = "not implemented by the fake"


def msg_same_subject(subject: str) -> str:
    return f"A CA certificate with subject {subject} is already in the trusted CA list"


def msg_large_rsa(bits: int) -> str:
    return (f"An {bits}-bit key is not supported for SIP TLS: SIP TLS connections need an RSA "
            f"key of at most {SIP_TLS_MAX_RSA_BITS} bits")


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint, lower-case hex: the id of a trusted CA in the REST path."""
    return cert.fingerprint(hashes.SHA256()).hex()


# ---------------------------------------------------------------- RAML

_METHODS: dict[str, dict[str, str]] = {  # resource path under /api -> method -> description
    "/provisioning/certs/server": {
        "get": "The server certificate (PEM, then its chain), its subject and expiry",
        "post": "Upload a server certificate (multipart part file, chain may follow) and its "
                "unencrypted private key (part key); takes effect at the next restart",
    },
    "/provisioning/certs/root": {
        "get": "The trusted CA certificate list",
        "post": "Add CA certificates (multipart part file: one or more PEM certificates)",
    },
    "/provisioning/certs/root/{fingerprint}": {
        "delete": "Remove the trusted CA certificate with this SHA-256 fingerprint",
    },
    "/provisioning/certs/generate_csr": {
        "post": "Generate a key and a certificate signing request on the Expressway",
    },
    "/provisioning/restart": {
        "post": "Restart the Expressway (applies an uploaded server certificate)",
    },
}


def make_raml(*, without: Iterable[str] = (), fqdn: str = "exp1.example.com") -> str:
    """The RAML 1.0 document ``GET /api/raml`` serves by default. ``without`` leaves parts
    out: a resource path under /api ("/provisioning/restart", with everything beneath it) or
    "METHOD path" ("post /provisioning/certs/server") for one method."""
    dropped = {entry.strip() for entry in without}
    tree: dict[str, Any] = {}
    for path, methods in _METHODS.items():
        if any(path == d or path.startswith(d.rstrip("/") + "/") for d in dropped):
            continue
        kept = {m: text for m, text in methods.items() if f"{m} {path}" not in dropped}
        node = tree
        for segment in path.strip("/").split("/"):
            node = node.setdefault("/" + segment, {})
        node.update(kept)
    lines = ["#%RAML 1.0", "title: Cisco Expressway REST API", "version: X8.10",
             "baseUri: https://{host}/api", "baseUriParameters:", "  host:",
             "    type: string", f"    default: {fqdn}", "mediaType: application/json",
             "securitySchemes:", "  basic:", "    type: Basic Authentication",
             "securedBy: [basic]"]
    _raml_lines(tree, 0, lines)
    return "\n".join(lines) + "\n"


def _raml_lines(node: dict[str, Any], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for key, value in node.items():
        if key.startswith("/"):
            lines.append(f"{pad}{key}:")
            _raml_lines(value, depth + 1, lines)
        else:
            lines += [f"{pad}{key}:", f"{pad}  description: {json.dumps(value)}"]
            if key == "post" and "multipart" in value:
                lines += [f"{pad}  body:", f"{pad}    multipart/form-data:",
                          f"{pad}      properties:", f"{pad}        file: file"]
                if "part key" in value:
                    lines.append(f"{pad}        key: file")


# ---------------------------------------------------------------- the server


@dataclass(frozen=True)
class Seen:
    """One request the fake answered (or dropped). Never holds the password."""

    method: str
    path: str  # as sent, with any query string
    username: str | None  # from the Basic Authorization header, right or wrong; else None
    content_type: str | None  # the request's Content-Type header
    status: int | None  # what the fake answered; None when it dropped the connection


@dataclass
class _Fault:
    path: str
    times: int
    status: int | None  # None: drop the connection
    message: str = ""


@dataclass
class _Reply:
    status: int
    body: dict[str, Any] | bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    after: Callable[[], None] | None = None  # run once the reply is written


_KEEP: Any = object()  # set_held's "leave as it is"


class FakeExpressway:
    """See the module docstring. Starts serving in the constructor; ``close()`` or ``with``."""

    def __init__(self, tls_cert: x509.Certificate, tls_key, *, username: str = "admin",
                 password: str = "secret", fqdn: str = "exp1.example.com",
                 raml: str | None = None, chain: Sequence[x509.Certificate] = (),
                 restart_downtime: float = 0.5, ca_file: Path | None = None):
        """``tls_key``: a private key object or its unencrypted PEM. ``chain``: certificates
        sent after ``tls_cert`` (TLS and ``GET certs/server``). ``raml``: the text of
        ``GET /api/raml`` (None: ``make_raml(fqdn=fqdn)``; "": that call answers 404).
        ``ca_file``: where the PEM of the CA that issued ``tls_cert`` is, for ``verify=``."""
        self.tls_cert = tls_cert
        self.tls_key = _private_key(tls_key)
        self.chain = list(chain)
        self.username = username
        self.password = password
        self.fqdn = fqdn
        self.raml = make_raml(fqdn=fqdn) if raml is None else raml
        self.restart_downtime = restart_downtime
        self.ca_file = ca_file
        # what the Expressway holds
        self.server_cert: x509.Certificate | None = None
        self.server_key = None
        self.server_chain: list[x509.Certificate] = []
        self.pending_restart = False
        self.trusted: list[x509.Certificate] = []
        # what happened
        self.requests: list[Seen] = []
        self.restarts = 0
        self.refused = 0  # connections closed unanswered because the fake was down
        self.presented: x509.Certificate = tls_cert  # what TLS presents now
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._down_until = 0.0
        self._open: set[socket.socket] = set()
        self._context = _tls_context(tls_cert, self.tls_key, self.chain)
        self._httpd = _Server((HOST, 0), _Handler)
        self._httpd.owner = self
        self.port: int = self._httpd.server_address[1]
        self.url = f"https://{HOST}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()

    @property
    def auth(self) -> tuple[str, str]:
        """(username, password), for ``requests``' ``auth=``."""
        return self.username, self.password

    # -- what tests do

    def set_held(self, *, server_cert: x509.Certificate | None = _KEEP, server_key=_KEEP,
                 server_chain: Sequence[x509.Certificate] = _KEEP,
                 trusted: Sequence[x509.Certificate] = _KEEP,
                 pending_restart: bool = _KEEP) -> None:
        """Change what the Expressway holds behind the client's back (an admin at the box).
        Only the arguments given change. TLS is not touched: a later restart presents
        ``server_cert`` if ``server_key`` is set too."""
        with self._lock:
            if server_cert is not _KEEP:
                self.server_cert = server_cert
            if server_key is not _KEEP:
                self.server_key = None if server_key is None else _private_key(server_key)
            if server_chain is not _KEEP:
                self.server_chain = list(server_chain)
            if trusted is not _KEEP:
                self.trusted = list(trusted)
            if pending_restart is not _KEEP:
                self.pending_restart = pending_restart

    def fail(self, path: str, status: int, times: int = 1, message: str | None = None) -> None:
        """The next ``times`` requests to ``path`` (no query; any method, before the auth
        check) answer ``status`` with ``{"Message": message}`` (default: the reason phrase)."""
        text = message if message is not None else HTTPStatus(status).phrase
        with self._lock:
            self._faults.append(_Fault(path, times, status, text))

    def drop(self, path: str, times: int = 1) -> None:
        """The next ``times`` requests to ``path`` get no answer: the connection is closed."""
        with self._lock:
            self._faults.append(_Fault(path, times, None))

    def down_for(self, seconds: float) -> None:
        """How long the listener closes every new connection after each restart."""
        self.restart_downtime = seconds

    def outage(self, seconds: float) -> None:
        """Go down now, without a restart: close open connections and every new one for
        ``seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
        self._cut_connections()

    def restart(self) -> None:
        """What ``POST /api/provisioning/restart`` does, from the test's side."""
        self._restart()
        self._cut_connections()

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def wait_up(self, timeout: float = 10.0) -> None:
        """Sleep until the downtime of a restart or outage is over."""
        left = self._down_until - time.monotonic()
        if left > timeout:
            raise TimeoutError(f"the fake Expressway stays down for {left:.1f} s more")
        if left > 0:
            time.sleep(left)

    def paths(self) -> list[str]:
        return [f"{seen.method} {seen.path}" for seen in self.requests]

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._cut_connections()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeExpressway:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the server's side (handler threads)

    def _restart(self) -> None:
        with self._lock:
            if self.server_cert is not None and self.server_key is not None:
                self._context = _tls_context(self.server_cert, self.server_key,
                                             self.server_chain)
                self.presented = self.server_cert
            self.pending_restart = False
            self.restarts += 1
            self._down_until = time.monotonic() + self.restart_downtime

    def _cut_connections(self, keep: socket.socket | None = None) -> None:
        with self._lock:
            doomed = [sock for sock in self._open if sock is not keep]
        for sock in doomed:
            # socket.socket's shutdown, not SSLSocket's (which drops the TLS state under the
            # thread still reading it): the reader wakes up to an end of file.
            _quietly(socket.socket.shutdown, sock, socket.SHUT_RDWR)

    def _connected(self, sock: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path == path and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _serve(self, handler: _Handler) -> None:
        path = urlsplit(handler.path).path
        username, password = _basic_credentials(handler.headers.get("Authorization"))
        seen = {"method": handler.command, "path": handler.path, "username": username,
                "content_type": handler.headers.get("Content-Type")}
        fault = self._take_fault(path)
        body = _read_body(handler)
        if fault is not None and fault.status is None:
            self.requests.append(Seen(**seen, status=None))
            handler.close_connection = True
            return
        if fault is not None:
            reply = _error(fault.status, fault.message)
        elif body is None:
            reply = _error(413, "The request body is larger than 1 MiB")
            handler.close_connection = True
        elif not self._authorized(username, password):
            reply = _error(401, MSG_AUTH)
            reply.headers["WWW-Authenticate"] = 'Basic realm="Expressway"'
        else:
            reply = self._route(handler.command, path, handler.headers.get("Content-Type"),
                                body, handler)
        self.requests.append(Seen(**seen, status=reply.status))
        _send(handler, reply)
        if reply.after is not None:
            reply.after()

    def _authorized(self, username: str | None, password: str | None) -> bool:
        if username is None or password is None:
            return False
        return username == self.username and password == self.password

    def _route(self, method: str, path: str, content_type: str | None, body: bytes,
               handler: _Handler) -> _Reply:
        root = "/api/provisioning/certs/root/"
        routes: dict[str, dict[str, Callable[[], _Reply]]] = {
            "/api/raml": {"GET": self._get_raml},
            "/api/provisioning/certs/server": {
                "GET": self._get_server,
                "POST": lambda: self._post_server(_multipart(content_type, body))},
            "/api/provisioning/certs/root": {
                "GET": self._get_root,
                "POST": lambda: self._post_root(_multipart(content_type, body))},
            "/api/provisioning/certs/generate_csr": {"POST": lambda: _error(501, MSG_CSR)},
            "/api/provisioning/restart": {"POST": lambda: self._post_restart(handler)},
        }
        if path.startswith(root) and "/" not in path[len(root):]:
            methods = {"DELETE": lambda: self._delete_root(path[len(root):])}
        else:
            methods = routes.get(path)
        if methods is None:
            return _error(404, "Not found")
        action = methods.get(method)
        if action is None:
            reply = _error(405, f"Method {method} is not allowed here")
            reply.headers["Allow"] = ", ".join(methods)
            return reply
        return action()

    def _get_raml(self) -> _Reply:
        if not self.raml:
            return _error(404, "Not found")
        return _Reply(200, self.raml.encode(), content_type="application/raml+yaml")

    def _get_server(self) -> _Reply:
        with self._lock:
            if self.server_cert is not None:
                cert, chain = self.server_cert, self.server_chain
            else:
                cert, chain = self.tls_cert, self.chain
        return _Reply(200, {"certificate": b"".join(pem(c) for c in [cert, *chain]).decode(),
                            "subject": cert.subject.rfc4514_string(),
                            "not_after": cert.not_valid_after_utc.isoformat()})

    def _post_server(self, parts: dict[str, bytes]) -> _Reply:
        cert_pem, key_bytes = parts.get("file"), parts.get("key")
        if not cert_pem or not key_bytes:
            return _error(400, MSG_BOTH_REQUIRED)
        try:
            cert, *chain = x509.load_pem_x509_certificates(cert_pem)
        except ValueError:
            return _error(400, MSG_BAD_CERT)
        if b"ENCRYPTED PRIVATE KEY" in key_bytes or b"Proc-Type: 4,ENCRYPTED" in key_bytes:
            return _error(400, MSG_KEY_ENCRYPTED)
        if not key_bytes.endswith(b"\n"):
            return _error(400, MSG_KEY_NEWLINE)
        try:  # parses, and matches below; pyca's RSA self-check costs 3 s on an 8192-bit key
            key = serialization.load_pem_private_key(key_bytes, password=None,
                                                     unsafe_skip_rsa_key_validation=True)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return _error(400, MSG_BAD_KEY)
        if _spki(key.public_key()) != _spki(cert.public_key()):
            return _error(400, MSG_KEY_MISMATCH)
        if any("*" in name for name in _dns_names(cert)):
            return _error(400, MSG_WILDCARD)
        warnings = []
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size > SIP_TLS_MAX_RSA_BITS:
            warnings.append(msg_large_rsa(key.key_size))
        with self._lock:
            self.server_cert, self.server_key, self.server_chain = cert, key, chain
            self.pending_restart = True
        return _Reply(200, {"Message": MSG_UPLOADED, "restart_required": True,
                            "warnings": warnings})

    def _get_root(self) -> _Reply:
        with self._lock:
            held = list(self.trusted)
        return _Reply(200, {"certificates": [
            {"subject": c.subject.rfc4514_string(), "pem": pem(c).decode()} for c in held]})

    def _post_root(self, parts: dict[str, bytes]) -> _Reply:
        try:
            certs = x509.load_pem_x509_certificates(parts.get("file") or b"")
        except ValueError:
            return _error(400, MSG_BAD_CA)
        with self._lock:
            held = list(self.trusted)
            for cert in certs:
                if cert in held:
                    continue  # the same certificate again: nothing to do
                if any(h.subject == cert.subject for h in held):
                    return _error(400, msg_same_subject(cert.subject.rfc4514_string()))
                held.append(cert)
            added = len(held) - len(self.trusted)
            self.trusted = held
        return _Reply(200, {"Message": MSG_CA_ADDED, "added": added})

    def _delete_root(self, sha256: str) -> _Reply:
        with self._lock:
            kept = [c for c in self.trusted if fingerprint(c) != sha256]
            if len(kept) == len(self.trusted):
                return _error(404, MSG_NO_CA)
            self.trusted = kept
        return _Reply(200, {"Message": MSG_CA_REMOVED})

    def _post_restart(self, handler: _Handler) -> _Reply:
        # Down before the 202 goes out, so a client that reconnects at once finds it down;
        # the connections still open are cut once it is written.
        self._restart()
        handler.close_connection = True
        return _Reply(202, {"Message": MSG_RESTARTING}, headers={"Connection": "close"},
                      after=lambda: self._cut_connections(keep=handler.request))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeExpressway

    def verify_request(self, request, client_address) -> bool:
        """Down (a restart): close the accepted socket at once, before any TLS."""
        if self.owner.is_down:
            self.owner.refused += 1
            return False
        return True

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up or reject the certificate are expected in these tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def setup(self) -> None:
        owner = self.server.owner
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.settimeout(self.timeout)
        plain = self.request
        owner._connected(plain, True)
        try:  # the context of this moment: a restart swaps it for the next connections
            self.request = owner._context.wrap_socket(plain, server_side=True)
        finally:
            owner._connected(plain, False)
        owner._connected(self.request, True)
        super().setup()

    def finish(self) -> None:
        _quietly(super().finish)
        self.server.owner._connected(self.request, False)
        _quietly(self.request.close)  # socketserver closes the plain socket, not this one

    def _any(self) -> None:
        try:
            self.server.owner._serve(self)
        except (OSError, ssl.SSLError):
            self.close_connection = True  # the client went away mid-reply

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _any

    def log_message(self, format, *args) -> None:
        pass


def _read_body(handler: _Handler) -> bytes | None:
    """The request body, or None when it is over MAX_BODY (read and dropped, up to a limit,
    so the client gets to read the 413)."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        handler.close_connection = True  # the fake does not read chunked bodies
        return None
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        length = _DRAIN_LIMIT + 1
    if length <= MAX_BODY:
        return handler.rfile.read(length)
    handler.close_connection = True
    if length <= _DRAIN_LIMIT:
        while length > 0:
            chunk = handler.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)
    return None


def _send(handler: _Handler, reply: _Reply) -> None:
    body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
    handler.send_response(reply.status)
    handler.send_header("Content-Type", reply.content_type)
    handler.send_header("Content-Length", str(len(body)))
    if handler.close_connection:
        reply.headers.setdefault("Connection", "close")
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _error(status: int, message: str) -> _Reply:
    return _Reply(status, {"Message": message})


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        username, colon, password = b64decode(value.strip(), validate=True).decode(
            ).partition(":")
    except (Base64Error, UnicodeDecodeError):
        return None, None
    return username, password if colon else None


def _multipart(content_type: str | None, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by name, their bytes exactly as sent (the CRLF
    before each delimiter belongs to the delimiter, RFC 2046 5.1.1). {} for anything else."""
    header = Message()
    header["Content-Type"] = content_type or "text/plain"
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        return {}
    parts: dict[str, bytes] = {}
    for chunk in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        head, found, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not found:
            continue
        headers = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if isinstance(name, str):
            parts.setdefault(name, content.removesuffix(b"\r\n"))
    return parts


def _dns_names(cert: x509.Certificate) -> list[str]:
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.DNSName)
    return names


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _private_key(key):
    if isinstance(key, bytes | str):
        key = key.encode() if isinstance(key, str) else key
        return serialization.load_pem_private_key(key, password=None,
                                                  unsafe_skip_rsa_key_validation=True)
    return key


def _tls_context(cert: x509.Certificate, key, chain: Sequence[x509.Certificate]
                 ) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:  # load_cert_chain reads only files
        cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_file.write_bytes(b"".join(pem(c) for c in [cert, *chain]))
        key_file.write_bytes(key_pem(key))
        context.load_cert_chain(cert_file, key_file)
    return context


def _quietly(action, *args) -> None:
    with contextlib.suppress(OSError):
        action(*args)


# ---------------------------------------------------------------- certificates for it


def issue(ca: LocalCa, common_name: str, *, dns: Sequence[str] = (), ips: Sequence[str] = (),
          key=None, days: int = 30) -> tuple[x509.Certificate, Any]:
    """A TLS server certificate from ``ca`` (e.g. ``httpd.make_ca()``), valid from an hour ago,
    with SANs ``dns`` and ``ips``, for ``key`` (default: a new EC P-256 key): (cert, key)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names = [*(x509.DNSName(d) for d in dns),
             *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca.cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]), False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256()), key


@dataclass(frozen=True)
class FactoryTls:
    """A CA and the "factory" HTTPS certificate it issued (CN exp1.example.com; SANs
    exp1.example.com, localhost, 127.0.0.1)."""

    ca: LocalCa
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def ca_file(self, folder: Path) -> Path:
        path = Path(folder, "expressway-ca.pem")
        path.write_bytes(self.ca.cert_pem)
        return path


@cache
def factory_tls() -> FactoryTls:
    """One for the session (made once: the keys are the slow part)."""
    ca = make_ca("Expressway test CA")
    cert, key = issue(ca, "exp1.example.com", dns=("exp1.example.com", "localhost"),
                      ips=(HOST,), days=365)
    return FactoryTls(ca, cert, key)


@pytest.fixture
def expressway(tmp_path):
    """A FakeExpressway with the factory certificate of ``factory_tls()``; ``ca_file`` is set
    (use ``verify=expressway.ca_file``), credentials admin/secret, restart downtime 0.5 s."""
    tls = factory_tls()
    with FakeExpressway(tls.cert, tls.key, ca_file=tls.ca_file(tmp_path)) as fake:
        yield fake
