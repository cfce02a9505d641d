"""Alerts over real sockets: an http.server receiver and an aiosmtpd relay on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.errors import BadInput
from scheduler.alerts import (
    Alert,
    AlertDeliveryError,
    SmtpChannel,
    WebhookChannel,
    channels_from_config,
    deliver,
)

RAISED = dt.datetime(2026, 11, 27, 2, 0, tzinfo=dt.UTC)
SECRET = "s3cret-token"


def make_alert(summary="CRL for CN=Acme Root CA not refreshed: HTTP 500 from http://crl.acme/r.crl",
               severity="critical") -> Alert:
    return Alert(key="crl-refresh-failed:ab12", severity=severity, summary=summary,
                 details={"issuer": "CN=Acme Root CA", "url": "http://crl.acme/r.crl",
                          "next_update": "2026-11-28T00:00:00+00:00", "attempts": 3},
                 raised_at=RAISED)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a webhook receiver ----------------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """Records each POST; answers ``status`` (or a redirect to ``location``), or hangs."""

    daemon_threads = False  # server_close() then joins the handler threads

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.posts: list[dict] = []
        self.status, self.location, self.hang = 204, None, False
        self.release = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append({"path": self.path, "headers": dict(self.headers),
                                  "json": json.loads(body)})
        if self.server.hang:
            self.server.release.wait(5)
            self.close_connection = True
            return
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receivers():
    started = []

    def start() -> Receiver:
        server = Receiver()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def receiver(receivers) -> Receiver:
    return receivers()


# --- a mail relay ----------------------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"

    def message(self, index=0):
        return email.message_from_bytes(self.envelopes[index].content, policy=email.policy.default)


class LocalController(Controller):
    """aiosmtpd on port 0: learn the port the kernel chose before the start-up probe."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@pytest.fixture
def relays():
    started = []

    def start(**kwargs) -> tuple[Recorder, LocalController]:
        recorder = Recorder()
        controller = LocalController(recorder, hostname="127.0.0.1", port=0, **kwargs)
        controller.start()
        started.append(controller)
        return recorder, controller

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, and a client context that trusts only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pkiq test relay")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
            .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def server_context(tls_files) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return context


def accept_login(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"pkiq", SECRET.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers the 535


# --- the alert itself ------------------------------------------------------------------------


@pytest.mark.parametrize("change, words", [
    ({"severity": "info"}, "severity"),
    ({"raised_at": dt.datetime(2026, 11, 27, 2, 0)}, "timezone-aware"),
    ({"details": {"when": RAISED}}, "JSON"),
    ({"key": " "}, "key"),
])
def test_alert_refuses_what_no_channel_could_send(change, words):
    fields = {"key": "k", "severity": "warning", "summary": "s", "details": {},
              "raised_at": RAISED} | change
    with pytest.raises(BadInput, match=words):
        Alert(**fields)


# --- webhook ---------------------------------------------------------------------------------


def test_webhook_posts_the_alert_as_json_with_its_headers(receiver):
    WebhookChannel(receiver.url + "/hook", timeout=2,
                   headers={"Authorization": f"Bearer {SECRET}"}).send(make_alert())

    [post] = receiver.posts
    assert post["path"] == "/hook"
    assert post["headers"]["Content-Type"] == "application/json"
    assert post["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert post["json"] == {
        "source": "pkiq", "key": "crl-refresh-failed:ab12", "severity": "critical",
        "summary": make_alert().summary, "details": make_alert().details,
        "raised_at": "2026-11-27T02:00:00+00:00"}


def test_webhook_500_names_the_status_but_not_the_token(receiver):
    receiver.status = 500
    channel = WebhookChannel(f"{receiver.url}/hooks/{SECRET}?token={SECRET}", timeout=2)

    with pytest.raises(AlertDeliveryError, match="HTTP 500") as caught:
        channel.send(make_alert())
    assert SECRET not in str(caught.value) and SECRET not in repr(channel)
    assert caught.value.channel == f"webhook {receiver.url}"


def test_webhook_that_hangs_is_abandoned_after_the_timeout(receiver):
    receiver.hang = True
    started = time.monotonic()
    with pytest.raises(AlertDeliveryError, match="did not answer within 0.3 s"):
        WebhookChannel(receiver.url, timeout=0.3).send(make_alert())
    assert time.monotonic() - started < 2


def test_webhook_refused_connection_gives_the_reason_without_the_url():
    url = f"http://127.0.0.1:{free_port()}/x?token={SECRET}"
    with pytest.raises(AlertDeliveryError, match="unreachable: Connection refused") as caught:
        WebhookChannel(url, timeout=1).send(make_alert())
    assert SECRET not in str(caught.value)


def test_webhook_follows_a_307_and_keeps_its_headers_on_the_same_origin(receiver):
    receiver.status, receiver.location = 307, "/moved"
    with pytest.raises(AlertDeliveryError, match="redirected more than 3 times"):
        WebhookChannel(receiver.url, timeout=2, headers={"X-Token": SECRET}).send(make_alert())
    assert [p["path"] for p in receiver.posts] == ["/", "/moved", "/moved", "/moved"]
    assert all(p["headers"]["X-Token"] == SECRET for p in receiver.posts)


def test_webhook_drops_its_headers_when_redirected_to_another_origin(receivers):
    first, second = receivers(), receivers()
    first.status, first.location = 308, second.url + "/elsewhere"

    WebhookChannel(first.url, timeout=2, headers={"X-Token": SECRET}).send(make_alert())

    [post] = second.posts
    assert post["path"] == "/elsewhere" and "X-Token" not in post["headers"]


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/drop", "file:///etc/passwd"])
def test_webhook_does_not_follow_a_redirect_off_http(receiver, location):
    receiver.status, receiver.location = 307, location
    with pytest.raises(AlertDeliveryError, match="only http"):
        WebhookChannel(receiver.url, timeout=2).send(make_alert())
    assert len(receiver.posts) == 1


def test_webhook_treats_a_302_as_a_failure_not_a_get(receiver):
    receiver.status, receiver.location = 302, "/elsewhere"
    with pytest.raises(AlertDeliveryError, match="HTTP 302"):
        WebhookChannel(receiver.url, timeout=2).send(make_alert())
    assert len(receiver.posts) == 1


# --- e-mail ----------------------------------------------------------------------------------


def test_mail_carries_subject_recipients_and_details(relays):
    recorder, relay = relays()
    SmtpChannel("127.0.0.1", relay.port, "pkiq@acme.example",
                ["pki@acme.example", "noc@acme.example"], timeout=2).send(make_alert())

    [envelope] = recorder.envelopes
    assert envelope.mail_from == "pkiq@acme.example"
    assert envelope.rcpt_tos == ["pki@acme.example", "noc@acme.example"]
    message = recorder.message()
    assert message["Subject"] == f"[pkiq] CRITICAL: {make_alert().summary}"
    assert message["To"] == "pki@acme.example, noc@acme.example"
    assert message["Date"].datetime == RAISED
    assert message["Message-ID"].endswith("@acme.example>")
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert "Problem:  crl-refresh-failed:ab12" in body
    assert "issuer: CN=Acme Root CA" in body and "attempts: 3" in body


def test_a_line_break_in_the_summary_cannot_add_a_header(relays):
    recorder, relay = relays()
    alert = make_alert(summary="CRL stale\r\nBcc: thief@evil.example\nX-Evil: 1")
    SmtpChannel("127.0.0.1", relay.port, "pkiq@acme.example", ["pki@acme.example"],
                timeout=2).send(alert)

    message = recorder.message()
    assert message["Subject"] == "[pkiq] CRITICAL: CRL stale Bcc: thief@evil.example X-Evil: 1"
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert recorder.envelopes[0].rcpt_tos == ["pki@acme.example"]


def test_mail_to_a_closed_port_is_a_delivery_error():
    port = free_port()
    refused = f"127.0.0.1:{port} unreachable: Connection refused"
    with pytest.raises(AlertDeliveryError, match=refused):
        SmtpChannel("127.0.0.1", port, "pkiq@acme.example", ["pki@acme.example"],
                    timeout=1).send(make_alert())


def test_a_relay_that_never_greets_is_abandoned_after_the_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        with pytest.raises(AlertDeliveryError, match="timed out"):
            SmtpChannel("127.0.0.1", silent.getsockname()[1], "pkiq@acme.example",
                        ["pki@acme.example"], timeout=0.3).send(make_alert())
    assert time.monotonic() - started < 2


def test_login_over_starttls(relays, tls_files):
    recorder, relay = relays(tls_context=server_context(tls_files), require_starttls=True,
                             authenticator=accept_login, auth_required=True)
    SmtpChannel("127.0.0.1", relay.port, "pkiq@acme.example", ["pki@acme.example"],
                starttls=True, username="pkiq", password=SECRET, timeout=2,
                tls_context=ssl.create_default_context(cafile=tls_files[0])).send(make_alert())
    assert len(recorder.envelopes) == 1


def test_a_refused_login_does_not_show_the_password(relays, tls_files, caplog):
    caplog.set_level(logging.DEBUG, logger="pkiq.alerts")
    _, relay = relays(tls_context=server_context(tls_files), require_starttls=True,
                      authenticator=accept_login, auth_required=True)
    channel = SmtpChannel("127.0.0.1", relay.port, "pkiq@acme.example", ["pki@acme.example"],
                          starttls=True, username="pkiq", password="wrong-" + SECRET,
                          timeout=2, tls_context=ssl.create_default_context(cafile=tls_files[0]))

    errors = deliver(make_alert(), [channel])

    assert len(errors) == 1 and "refused the login of pkiq (SMTP 535)" in errors[0]
    assert SECRET not in errors[0] + repr(channel) + caplog.text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_login_over_implicit_tls(relays, tls_files):
    # the whole session is TLS, but aiosmtpd only counts STARTTLS as TLS for AUTH (and warns)
    recorder, relay = relays(ssl_context=server_context(tls_files), authenticator=accept_login,
                             auth_required=True, auth_require_tls=False)
    [mail] = channels_from_config(MAIL | {
        "smtp_host": "127.0.0.1", "smtp_port": relay.port, "smtp_ssl": "yes",
        "smtp_username": "pkiq", "smtp_password": SECRET, "smtp_timeout": 2})
    mail.tls_context = ssl.create_default_context(cafile=tls_files[0])
    mail.send(make_alert())
    assert recorder.envelopes[0].rcpt_tos == ["pki@acme.example"]


def test_starttls_checks_the_relay_certificate(relays, tls_files):
    _, relay = relays(tls_context=server_context(tls_files), require_starttls=True)
    with pytest.raises(AlertDeliveryError, match="certificate verify failed"):
        SmtpChannel("127.0.0.1", relay.port, "pkiq@acme.example", ["pki@acme.example"],
                    starttls=True, timeout=2).send(make_alert())


# --- deliver ---------------------------------------------------------------------------------


class Broken:
    def send(self, alert):
        raise RuntimeError("bug")

    def __repr__(self):
        return "Broken()"


def test_deliver_goes_on_past_a_failing_channel(receiver, relays, caplog):
    caplog.set_level(logging.DEBUG, logger="pkiq.alerts")
    receiver.status = 500
    recorder, relay = relays()
    channels = [WebhookChannel(f"{receiver.url}/?token={SECRET}", timeout=2), Broken(),
                SmtpChannel("127.0.0.1", relay.port, "pkiq@acme.example", ["pki@acme.example"],
                            timeout=2)]

    errors = deliver(make_alert(), channels)

    assert errors == [f"webhook {receiver.url} answered HTTP 500 Internal Server Error",
                      "Broken() failed unexpectedly: RuntimeError"]
    assert len(receiver.posts) == 1 and len(recorder.envelopes) == 1
    assert SECRET not in caplog.text
    assert "delivered via SmtpChannel('127.0.0.1:" in caplog.text


def test_deliver_with_every_channel_working_returns_no_errors(receiver):
    assert deliver(make_alert(severity="resolved"), [WebhookChannel(receiver.url)]) == []
    assert receiver.posts[0]["json"]["severity"] == "resolved"


# --- configuration ---------------------------------------------------------------------------

MAIL = {"smtp_host": "relay.acme.example", "smtp_from": "pkiq@acme.example",
        "smtp_to": "pki@acme.example"}


def test_config_builds_both_channels_and_ignores_unrelated_and_unset_keys():
    channels = channels_from_config({
        "webhook_url": "https://hooks.example/T1/B2/x", "webhook_timeout": "5",
        "webhook_headers": {"Authorization": "Bearer x"}, "database_url": "sqlite://",
        "smtp_host": "relay.acme.example", "smtp_port": "587", "smtp_from": "pkiq@acme.example",
        "smtp_to": "pki@acme.example; noc@acme.example ,", "smtp_starttls": "true",
        "smtp_username": "pkiq", "smtp_password": SECRET, "smtp_ssl": None})

    webhook, mail = channels
    assert repr(webhook) == "WebhookChannel('https://hooks.example')" and webhook.timeout == 5
    assert (mail.host, mail.port, mail.starttls, mail.ssl) == ("relay.acme.example", 587, True,
                                                               False)
    assert mail.recipients == ("pki@acme.example", "noc@acme.example")
    assert SECRET not in repr(mail)


def test_config_defaults_and_nothing_configured():
    assert channels_from_config({"webhook_url": "", "smtp_host": None}) == []
    [mail] = channels_from_config(MAIL | {"smtp_to": ["a@x", "b@y"]})
    assert mail.port == 25 and mail.timeout == 10 and mail.recipients == ("a@x", "b@y")
    assert channels_from_config(MAIL | {"smtp_ssl": True})[0].port == 465


@pytest.mark.parametrize("config, words", [
    ({"webhook_url": "ftp://hooks.example/x"}, "http or https, not ftp"),
    ({"webhook_url": "hooks.example/x"}, "http or https"),
    ({"webhook_url": "https:///x"}, "no host"),
    ({"webhook_url": "https://hooks.example/a b"}, "white space"),
    ({"webhook_url": "https://hooks.example:99999/"}, "not a URL"),
    ({"webhook_url": "https://h.example", "webhook_timeout": 0}, "webhook_timeout"),
    ({"webhook_url": "https://h.example", "webhook_timeout": 3600}, "webhook_timeout"),
    ({"webhook_timeout": 5}, "without webhook_url"),
    ({"webhook_url": "https://h.example", "webhook_headers": {"Bad Name": "x"}}, "HTTP token"),
    ({"webhook_url": "https://h.example", "webhook_headers": "Authorization: x"}, "mapping"),
    ({"smtp_host": "relay.acme.example"}, "need smtp_from, smtp_to"),
    (MAIL | {"smtp_to": "pki@acme.example, not an address"}, "smtp_to must be plain"),
    (MAIL | {"smtp_to": "Acme PKI <pki@acme.example>"}, "smtp_to must be plain"),
    (MAIL | {"smtp_to": 42}, "comma-separated"),
    (MAIL | {"smtp_to": " , "}, "at least one"),
    (MAIL | {"smtp_from": "pkiq"}, "smtp_from must be plain"),
    (MAIL | {"smtp_port": "smtp"}, "smtp_port"),
    (MAIL | {"smtp_port": 70000}, "smtp_port"),
    (MAIL | {"smtp_startls": True}, "unknown alert setting smtp_startls"),
    (MAIL | {"smtp_starttls": "maybe"}, "true or false"),
    (MAIL | {"smtp_starttls": True, "smtp_ssl": True}, "not both"),
    (MAIL | {"smtp_username": "pkiq"}, "go together"),
    (MAIL | {"smtp_host": "relay acme"}, "smtp_host"),
])
def test_config_refuses(config, words):
    with pytest.raises(BadInput, match=words):
        channels_from_config(config)


def test_config_refuses_credentials_in_clear_without_echoing_them():
    with pytest.raises(BadInput, match="in clear") as caught:
        channels_from_config(MAIL | {"smtp_username": "pkiq", "smtp_password": SECRET})
    assert SECRET not in str(caught.value)


def test_config_refuses_a_multi_line_header_without_echoing_it():
    with pytest.raises(BadInput, match="Authorization must be a single-line") as caught:
        channels_from_config({"webhook_url": "https://h.example",
                              "webhook_headers": {"Authorization": f"Bearer {SECRET}\r\nX: 1"}})
    assert SECRET not in str(caught.value)
