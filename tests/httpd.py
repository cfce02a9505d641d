"""A real HTTP(S) server on 127.0.0.1 for tests, in a background thread.

Routes map a path to a canned ``Reply`` (status, headers, body, ETag and Last-Modified with
304 answers, a delay, a dripping or truncated body, chunked encoding) or to a function of the
request. Every request is logged for assertions. The HTTPS variant presents a certificate for
127.0.0.1 issued by a throwaway test CA whose PEM is ``server.ca_pem``.

Use the fixtures from a test module (not conftest) by binding them to module names (an
import would trip ruff's F811 at every test that takes the fixture)::

    from . import httpd
    from .httpd import Reply

    http_server = httpd.http_server
    https_server = httpd.https_server

    def test_x(http_server):
        http_server.route("/a.crl", Reply(body=der, etag='"v1"'))
        url = http_server.url("/a.crl")
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .crlfactory import Issuer

HOST = "127.0.0.1"


@dataclass
class Reply:
    """What a route answers. The defaults are a plain ``200`` with an empty body."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # may override Content-Length
    etag: str | None = None  # sent, and a matching If-None-Match gets 304
    last_modified: str | None = None  # sent, and an equal If-Modified-Since gets 304
    delay: float = 0.0  # seconds before the status line (a hang, if longer than the timeout)
    drip: float = 0.0  # seconds between body bytes, sent one at a time
    truncate_at: int | None = None  # send this many body bytes, then close the connection
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length
    repeat: int = 1  # send the body this many times (chunked): an endless answer, in effect


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status=status, headers={"Location": location})


@dataclass(frozen=True)
class Seen:
    """One logged request; ``headers`` look up case-insensitively."""

    method: str
    path: str  # with the query string
    headers: Message


Route = Reply | bytes | Callable[[Seen], Reply]


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1, port chosen by the OS, HTTP/1.1 keep-alive."""

    def __init__(self, tls_ca: LocalCa | None = None, *, cert_ip: str = HOST,
                 cert_dns: tuple[str, ...] = ("localhost",), host: str = HOST):
        """With ``tls_ca``, serve HTTPS with a certificate for ``cert_ip`` and ``cert_dns``
        issued by that CA (name another IP to test a host mismatch). ``host``: the address
        to listen on (an IPv6 one too)."""
        self.ca_pem = tls_ca.cert_pem if tls_ca else None
        self.requests: list[Seen] = []
        self.connections = 0
        self._routes: dict[str, Route] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.host = host
        server_class = _Server6 if ":" in host else _Server
        self._httpd = server_class((host, 0), _Handler)
        self._httpd.owner = self
        self._httpd.tls = _server_context(tls_ca, cert_ip, cert_dns) if tls_ca else None
        self.port = self._httpd.server_address[1]
        self.scheme = "https" if tls_ca else "http"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    def route(self, path: str, reply: Route) -> None:
        """Answer ``path`` (query ignored) with a Reply, bytes (200), or reply(request)."""
        self._routes[path] = reply

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake delayed and dripping replies, and cut open connections."""
        self._stopping.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
        with self._lock:
            for sock in self._open:
                _quietly(sock.shutdown, socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- called from handler threads

    def _connected(self, sock: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self.connections += not isinstance(sock, ssl.SSLSocket)
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def _serve(self, handler: _Handler) -> None:
        seen = Seen(handler.command, handler.path, handler.headers)
        self.requests.append(seen)
        route = self._routes.get(urlsplit(handler.path).path)
        if route is None:
            reply = Reply(404, b"no such route\n")
        elif isinstance(route, bytes):
            reply = Reply(body=route)
        elif isinstance(route, Reply):
            reply = route
        else:
            reply = route(seen)
        if reply.delay and self._stopping.wait(reply.delay):
            handler.close_connection = True
            return
        _send(handler, reply, self._stopping)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once in parallel-fetch tests
    owner: LocalServer
    tls: ssl.SSLContext | None

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up or reject our certificate are expected in these tests."""


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        # Headers and body go out in two writes; without this, Nagle's algorithm holds the
        # second until the client's delayed ACK (about 40 ms per response).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        owner = self.server.owner
        owner._connected(self.request, True)
        if self.server.tls is not None:
            plain = self.request
            try:
                self.request = self.server.tls.wrap_socket(plain, server_side=True)
            finally:
                owner._connected(plain, False)
            owner._connected(self.request, True)
        super().setup()

    def finish(self) -> None:
        _quietly(super().finish)
        self.server.owner._connected(self.request, False)
        _quietly(self.request.close)  # a TLS socket replaced the one socketserver closes

    def do_GET(self) -> None:
        try:
            self.server.owner._serve(self)
        except (OSError, ssl.SSLError):
            self.close_connection = True  # the client went away mid-reply

    def do_POST(self) -> None:
        """As GET, once the request's body is read (an OCSP responder's clients POST)."""
        length = self.headers.get("Content-Length", "0")
        self.rfile.read(int(length) if length.isdigit() else 0)
        self.do_GET()

    def log_message(self, format, *args) -> None:
        pass


def _send(handler: _Handler, reply: Reply, stopping: threading.Event) -> None:
    if _not_modified(handler.headers, reply):
        handler.send_response(304)
        _validators(handler, reply)
        handler.end_headers()
        return
    handler.send_response(reply.status)
    _validators(handler, reply)
    headers = dict(reply.headers)
    if reply.chunked or reply.repeat > 1:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers.setdefault("Content-Length", str(len(reply.body)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    body = reply.body if reply.truncate_at is None else reply.body[:reply.truncate_at]
    if reply.drip:
        for index in range(len(body)):
            _write(handler, body[index:index + 1], reply.chunked)
            if stopping.wait(reply.drip):
                break
    elif body:
        for _ in range(reply.repeat):
            if stopping.is_set():
                break
            _write(handler, body, reply.chunked or reply.repeat > 1)
    if (reply.chunked or reply.repeat > 1) and reply.truncate_at is None:
        handler.wfile.write(b"0\r\n\r\n")
    if reply.truncate_at is not None:
        handler.close_connection = True


def _write(handler: _Handler, data: bytes, chunked: bool) -> None:
    handler.wfile.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)


def _not_modified(headers: Message, reply: Reply) -> bool:
    """RFC 9110 13.1: If-None-Match decides when present, else If-Modified-Since (here an
    exact match, which is what a client echoing our Last-Modified sends)."""
    match = headers.get("If-None-Match")
    if match is not None:
        tags = {tag.strip() for tag in match.split(",")}
        return reply.etag is not None and ("*" in tags or reply.etag in tags)
    since = headers.get("If-Modified-Since")
    return since is not None and since == reply.last_modified


def _validators(handler: _Handler, reply: Reply) -> None:
    if reply.etag:
        handler.send_header("ETag", reply.etag)
    if reply.last_modified:
        handler.send_header("Last-Modified", reply.last_modified)


def _quietly(action, *args) -> None:
    with contextlib.suppress(OSError):
        action(*args)


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- a CA for HTTPS


LocalCa = Issuer  # a key and its self-signed CA certificate


def make_ca(name: str = "pkiq test TLS CA") -> LocalCa:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256()))
    return LocalCa(key, cert)


def server_cert(ca: LocalCa, ip: str = HOST,
                dns: tuple[str, ...] = ("localhost",)) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for a TLS server at ``ip`` (an IP SAN) and ``dns``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names = [x509.IPAddress(ipaddress.ip_address(ip)), *(x509.DNSName(d) for d in dns)]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), False)
            .sign(ca.key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _server_context(ca: LocalCa, ip: str, dns: tuple[str, ...]) -> ssl.SSLContext:
    cert_pem, key_pem = server_cert(ca, ip, dns)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:  # load_cert_chain reads only files
        cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_file.write_bytes(cert_pem + ca.cert_pem)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


@cache
def session_ca() -> LocalCa:
    """One TLS CA for the whole run (what ``https_server`` presents)."""
    return make_ca()


@pytest.fixture
def http_server():
    with LocalServer() as server:
        yield server


@pytest.fixture
def https_server():
    """HTTPS on 127.0.0.1 with a certificate from ``session_ca()``; trust ``ca_pem``."""
    with LocalServer(tls_ca=session_ca()) as server:
        yield server
