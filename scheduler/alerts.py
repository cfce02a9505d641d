"""Alerts from the CRL updater: format one problem and hand it to a webhook or a mail relay.

Deduplication ("once per problem, not once per minute") is the caller's, kept in the database;
this module only formats and delivers. Secrets (the SMTP password, tokens in a webhook URL,
webhook headers such as Authorization) never reach an error message or a log line: a webhook
is named by its origin alone, because services such as Slack carry the token in the path.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import smtplib
import ssl as tls
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests

from ca.errors import BadInput, PkiqError

from .causes import causes

log = logging.getLogger("pkiq.alerts")

SEVERITIES = ("warning", "critical", "resolved")
MAX_TIMEOUT = 300.0  # seconds; a nightly job must not sit on one dead channel for longer
MAX_REDIRECTS = 3
REDIRECTS_KEEPING_POST = (307, 308)  # RFC 9110 15.4: 301/302/303 may turn the POST into a GET


class AlertDeliveryError(PkiqError):
    """A channel could not hand the alert over; the message names the channel, not its secrets."""

    http_status = 502

    def __init__(self, message: str, channel: str):
        super().__init__(message)
        self.channel = channel


@dataclass(frozen=True)
class Alert:
    """One problem, stated once; ``key`` stays the same for as long as the problem lasts."""

    key: str
    severity: str
    summary: str
    details: dict
    raised_at: dt.datetime

    def __post_init__(self):
        if not self.key.strip():
            raise BadInput("an alert needs a key that names the problem")
        if self.severity not in SEVERITIES:
            raise BadInput(f"alert severity must be one of {', '.join(SEVERITIES)}, "
                           f"not {self.severity!r}")
        if not self.summary.strip():
            raise BadInput("an alert needs a summary")
        if self.raised_at.utcoffset() is None:
            raise BadInput("alert raised_at must be timezone-aware")
        try:
            json.dumps(self.details, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"alert details must be JSON-serialisable: {exc}") from None

    def as_json(self) -> dict:
        return {"source": "pkiq", "key": self.key, "severity": self.severity,
                "summary": self.summary, "details": self.details,
                "raised_at": self.raised_at.astimezone(dt.UTC).isoformat()}


class Channel(Protocol):
    def send(self, alert: Alert) -> None: ...


def deliver(alert: Alert, channels: Iterable[Channel]) -> list[str]:
    """Send through every channel, so one dead channel does not silence the others; return the
    errors (empty: all delivered) for the caller to record beside its deduplication row."""
    errors = []
    for channel in channels:
        try:
            channel.send(alert)
        except AlertDeliveryError as exc:
            log.warning("alert %s not delivered: %s", alert.key, exc)
            errors.append(str(exc))
        except Exception as exc:  # a bug in one channel must not stop the next
            log.exception("alert %s: %r failed unexpectedly", alert.key, channel)
            errors.append(f"{channel!r} failed unexpectedly: {type(exc).__name__}")
        else:
            log.info("alert %s (%s) delivered via %r", alert.key, alert.severity, channel)
    return errors


# --- webhook ---------------------------------------------------------------------------------


class WebhookChannel:
    """POSTs the alert as JSON; follows only method-keeping redirects to http(s), and sends the
    configured headers only to the configured origin."""

    def __init__(self, url: str, *, timeout: float = 10.0,
                 headers: Mapping[str, str] | None = None):
        self.url = _check_webhook_url(url)
        self.origin = _origin(self.url)
        self.timeout = _check_timeout(timeout, "webhook_timeout")
        self._headers = _check_headers(headers or {})

    def __repr__(self) -> str:
        return f"WebhookChannel({self.origin!r})"

    def send(self, alert: Alert) -> None:
        name = f"webhook {self.origin}"
        body = json.dumps(alert.as_json()).encode()
        try:
            with requests.Session() as session:
                status, reason = self._post(session, body)
        except requests.Timeout:
            raise AlertDeliveryError(f"{name} did not answer within {self.timeout:g} s",
                                     name) from None
        except requests.RequestException as exc:  # its text holds the full URL: never shown
            raise AlertDeliveryError(f"{name} unreachable: {_os_reason(exc)}", name) from None
        if not 200 <= status < 300:
            raise AlertDeliveryError(f"{name} answered HTTP {status} {reason}".rstrip(), name)

    def _post(self, session: requests.Session, body: bytes) -> tuple[int, str]:
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"Content-Type": "application/json", "User-Agent": "pkiq-alerts"}
            if _origin(url) == self.origin:
                headers.update(self._headers)
            with session.post(url, data=body, headers=headers, timeout=self.timeout,
                              allow_redirects=False, stream=True) as response:
                status, reason = response.status_code, _one_line(response.reason or "")[:100]
                location = response.headers.get("Location")
            if status not in REDIRECTS_KEEPING_POST or not location:
                return status, reason
            url = _check_redirect(urljoin(url, location), self.origin)
        raise AlertDeliveryError(f"webhook {self.origin} redirected more than {MAX_REDIRECTS} "
                                 f"times", f"webhook {self.origin}")


def _check_webhook_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except (ValueError, TypeError, AttributeError):
        raise BadInput("webhook_url is not a URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadInput(f"webhook_url must be http or https, not {parts.scheme or 'schemeless'}")
    if not host:
        raise BadInput("webhook_url has no host")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise BadInput("webhook_url contains white space or control characters")
    return url


def _check_redirect(target: str, origin: str) -> str:
    scheme = urlsplit(target).scheme.lower()
    if scheme not in ("http", "https") or (origin.startswith("https:") and scheme == "http"):
        raise AlertDeliveryError(f"webhook {origin} redirected to a {scheme or 'schemeless'} "
                                 f"URL; only http(s), never down from https, is followed",
                                 f"webhook {origin}")
    return target


def _origin(url: str) -> str:
    """scheme://host[:port], without user, path or query: the part safe to log."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2].lower()}"


def _check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise BadInput("webhook_headers must be a mapping of header names to values")
    for name, value in headers.items():
        if not isinstance(name, str) or not name or not all(
                c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name):
            raise BadInput(f"webhook header name {name!r} is not an HTTP token")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            # the value may be a credential: name the header only
            raise BadInput(f"webhook header {name} must be a single-line string")
    return dict(headers)


def _os_reason(exc: BaseException) -> str:
    """The operating system's or TLS library's reason (Connection refused, certificate verify
    failed), found under requests' and urllib3's wrappers, whose own text carries the URL."""
    for cause in causes(exc):
        wrapper = type(cause).__module__.split(".")[0] in ("requests", "urllib3")
        if isinstance(cause, OSError) and not wrapper:
            return cause.strerror or type(cause).__name__
    return "connection failed"


# --- e-mail ----------------------------------------------------------------------------------


class SmtpChannel:
    """Sends a plain-text mail through a relay; credentials travel only inside TLS."""

    def __init__(self, host: str, port: int, sender: str, recipients: Sequence[str], *,
                 starttls: bool = False, ssl: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 10.0,
                 tls_context: tls.SSLContext | None = None):
        if starttls and ssl:
            raise BadInput("choose smtp_starttls or smtp_ssl, not both")
        if (username is None) != (password is None):
            raise BadInput("smtp_username and smtp_password go together")
        if username is not None and not (starttls or ssl):
            raise BadInput("SMTP credentials would cross the network in clear: "
                           "turn on smtp_starttls or smtp_ssl")
        if not isinstance(host, str) or not host or any(c.isspace() for c in host):
            raise BadInput("smtp_host must be a host name or address")
        self.host = host
        self.port = _check_port(port)
        self.sender = _check_address(sender, "smtp_from")
        if isinstance(recipients, str) or not recipients:
            raise BadInput("smtp_to needs at least one address")
        self.recipients = tuple(_check_address(r, "smtp_to") for r in recipients)
        self.starttls, self.ssl = starttls, ssl
        self.username, self._password = username, password
        self.timeout = _check_timeout(timeout, "smtp_timeout")
        self.tls_context = tls_context  # None: the system's trust store, host name checked

    def __repr__(self) -> str:
        return f"SmtpChannel('{self.host}:{self.port}', to={list(self.recipients)})"

    def send(self, alert: Alert) -> None:
        name = f"smtp {self.host}:{self.port}"
        try:
            refused = self._submit(alert_message(alert, self.sender, self.recipients))
        except smtplib.SMTPAuthenticationError as exc:
            raise AlertDeliveryError(f"{name} refused the login of {self.username} "
                                     f"(SMTP {exc.smtp_code})", name) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise AlertDeliveryError(f"{name} refused every recipient: "
                                     f"{', '.join(exc.recipients)}", name) from None
        except smtplib.SMTPResponseException as exc:
            raise AlertDeliveryError(f"{name} answered SMTP {exc.smtp_code} "
                                     f"{_server_text(exc.smtp_error)}", name) from None
        except smtplib.SMTPException as exc:  # disconnects, missing STARTTLS or AUTH
            raise AlertDeliveryError(f"{name}: {exc}", name) from None
        except TimeoutError:
            raise AlertDeliveryError(f"{name} did not answer within {self.timeout:g} s",
                                     name) from None
        except OSError as exc:  # refused, unresolvable, TLS verification
            raise AlertDeliveryError(f"{name} unreachable: {exc.strerror or exc}",
                                     name) from None
        if refused:
            raise AlertDeliveryError(f"{name} refused {', '.join(refused)} (delivered to the "
                                     f"other recipients)", name)

    def _submit(self, message: EmailMessage) -> dict:
        context = self.tls_context or tls.create_default_context()
        # the constructor connects; it closes its socket itself when the greeting fails, and
        # remembers the host name that TLS then checks the certificate against
        if self.ssl:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.starttls:
                smtp.starttls(context=context)
            if self.username is not None:
                smtp.login(self.username, self._password)
            return smtp.send_message(message, self.sender, list(self.recipients))


def alert_message(alert: Alert, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The alert as a plain-text mail; the summary is folded to one line for the Subject so a
    CR/LF in it cannot start a header of its own."""
    message = EmailMessage()
    message["Subject"] = _one_line(f"[pkiq] {alert.severity.upper()}: {alert.summary}")
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(alert.raised_at.astimezone(dt.UTC))
    message["Message-ID"] = make_msgid("pkiq", domain=sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    message["X-Pkiq-Alert-Key"] = _one_line(alert.key)
    facts = [f"Severity: {alert.severity.upper()}", f"Problem:  {alert.key}",
             f"Raised:   {alert.raised_at.astimezone(dt.UTC).isoformat()}"]
    details = [f"{k}: {v if isinstance(v, str) else json.dumps(v)}"
               for k, v in alert.details.items()]
    message.set_content("\n\n".join(filter(None, [
        alert.summary, "\n".join(facts), "\n".join(details)])) + "\n")
    return message


def _one_line(text: str) -> str:
    return " ".join(text.split())  # every Unicode line break and tab becomes one space


def _server_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return _one_line(text)[:200]


def _check_address(value: Any, setting: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    try:
        address = Address(addr_spec=text)
    except (ValueError, IndexError, MessageError):
        address = None
    if address is None or not address.username or not address.domain:
        raise BadInput(f"{setting} must be plain e-mail addresses (user@domain), "
                       f"not {_one_line(str(value))[:80]!r}")
    return text


def _check_port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if isinstance(value, bool | float) or not 1 <= port <= 65535:
        raise BadInput(f"smtp_port must be a port number (1-65535), not {value!r}")
    return port


def _check_timeout(value: Any, setting: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if isinstance(value, bool) or not 0 < seconds <= MAX_TIMEOUT:
        raise BadInput(f"{setting} must be a number of seconds in (0, {MAX_TIMEOUT:g}], "
                       f"not {value!r}")
    return seconds


# --- configuration ---------------------------------------------------------------------------

WEBHOOK_KEYS = ("webhook_url", "webhook_timeout", "webhook_headers")
SMTP_KEYS = ("smtp_host", "smtp_port", "smtp_from", "smtp_to", "smtp_starttls", "smtp_ssl",
             "smtp_username", "smtp_password", "smtp_timeout")


def channels_from_config(config: Mapping[str, Any]) -> list[Channel]:
    """Build the channels a settings mapping describes, refusing what would fail at 3 a.m.:
    unknown ``webhook_*``/``smtp_*`` keys (a typo would silently drop TLS), a non-http(s)
    webhook, non-addresses in ``smtp_to``. Other keys are ignored, so the whole settings
    object may be passed; None and "" count as unset. No channel configured gives []."""
    given = {k: v for k, v in config.items() if v is not None and v != ""}
    unknown = sorted(k for k in given if k.startswith(("webhook_", "smtp_"))
                     and k not in WEBHOOK_KEYS + SMTP_KEYS)
    if unknown:
        raise BadInput(f"unknown alert setting {', '.join(unknown)}; known: "
                       f"{', '.join(WEBHOOK_KEYS + SMTP_KEYS)}")
    channels: list[Channel] = []
    if "webhook_url" in given:
        channels.append(WebhookChannel(given["webhook_url"],
                                       timeout=given.get("webhook_timeout", 10.0),
                                       headers=given.get("webhook_headers")))
    elif any(k in given for k in WEBHOOK_KEYS):
        raise BadInput("webhook settings given without webhook_url")
    if any(k in given for k in SMTP_KEYS):
        missing = [k for k in ("smtp_host", "smtp_from", "smtp_to") if k not in given]
        if missing:
            raise BadInput(f"e-mail alerts need {', '.join(missing)}")
        ssl = _flag(given, "smtp_ssl")
        channels.append(SmtpChannel(
            given["smtp_host"], given.get("smtp_port", 465 if ssl else 25), given["smtp_from"],
            _address_list(given["smtp_to"]), starttls=_flag(given, "smtp_starttls"), ssl=ssl,
            username=given.get("smtp_username"), password=given.get("smtp_password"),
            timeout=given.get("smtp_timeout", 10.0)))
    return channels


def _address_list(value: Any) -> list[str]:
    """"a@x, b@y" (one environment variable) or a list."""
    if isinstance(value, str):
        return [a for a in value.replace(";", ",").split(",") if a.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    raise BadInput("smtp_to must be a comma-separated string or a list of addresses")


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise BadInput(f"{key} must be true or false, not {value!r}")
