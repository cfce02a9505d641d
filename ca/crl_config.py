"""The CRL management settings (the guide's page): automatic updates on or off, the HTTP(S)
distribution points, the daily update time in UTC, and the limits every fetch runs under."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import secrets
from dataclasses import dataclass, fields
from urllib.parse import urljoin, urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .errors import BadInput, NotFound
from .models import CrlIssuerStatus, CrlSettings, DistributionPoint
from .sql import insert_or_ignore

DEFAULTS = dict(enabled=True, update_time="02:00", spread_seconds=0, use_cdp=False,
                timeout_seconds=60, max_bytes=64 * 2**20, parallelism=16, skew_seconds=300,
                warn_hours=48, overlap_hours=24)
# name: (low, high) for the numeric settings
LIMITS = dict(spread_seconds=(0, 6 * 3600), timeout_seconds=(1, 3600),
              max_bytes=(1024, 2 * 2**30), parallelism=(1, 128), skew_seconds=(0, 86400),
              warn_hours=(1, 24 * 30), overlap_hours=(1, 24 * 30))
MAX_URL = 2048
SHOWN_URL = 120  # characters of a URL a message quotes
SCHEMES = ("http", "https")


def get_settings(session: Session, now: dt.datetime, *, for_update: bool = False
                 ) -> CrlSettings:
    """The one settings row, made with the defaults the first time it is asked for."""
    query = select(CrlSettings).where(CrlSettings.id == 1)
    row = session.scalar(query.with_for_update() if for_update else query)
    if row is None:  # two processes may get here at once: one row either way
        insert_or_ignore(session, CrlSettings, dict(id=1, updated_at=now,
                                                    seed=secrets.token_hex(16), **DEFAULTS))
        row = session.scalar(query.with_for_update() if for_update else query)
    return row


@dataclass(frozen=True)
class CrlPolicy:
    """The settings as one frozen value (``snapshot``), not the ORM row: read once, so a
    beat tick decides whether the refresh is due, runs it, renews pkiq's own CRLs and
    raises alerts on one consistent set even when an operator changes them meanwhile."""

    enabled: bool
    update_time: str  # HH:MM, UTC
    spread_seconds: int
    use_cdp: bool
    timeout_seconds: int
    max_bytes: int
    parallelism: int
    skew_seconds: int
    warn_hours: int
    overlap_hours: int
    seed: str

    @property
    def skew(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.skew_seconds)

    @property
    def warn(self) -> dt.timedelta:
        return dt.timedelta(hours=self.warn_hours)

    @property
    def overlap(self) -> dt.timedelta:
        return dt.timedelta(hours=self.overlap_hours)


def snapshot(session: Session, now: dt.datetime) -> CrlPolicy:
    """The settings as they are now (made with the defaults the first time)."""
    row = get_settings(session, now)
    return CrlPolicy(**{name.name: getattr(row, name.name) for name in fields(CrlPolicy)})


def parse_time(text: str) -> str:
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text or "")
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise BadInput(f"update time {text!r}: give the time of day in UTC as HH:MM, "
                       "e.g. 02:30")
    return f"{int(match[1]):02d}:{match[2]}"


def update_settings(session: Session, now: dt.datetime, **changes) -> CrlSettings:
    """Change some settings; every value is checked before any is written."""
    row = get_settings(session, now, for_update=True)
    clean = {}
    for name, value in changes.items():
        if value is None:
            continue
        if name == "update_time":
            value = parse_time(value)
        elif name in LIMITS:
            low, high = LIMITS[name]
            if not low <= int(value) <= high:
                raise BadInput(f"{name.replace('_', ' ')} {value}: must be between {low} "
                               f"and {high}")
            value = int(value)
        elif name in ("enabled", "use_cdp"):
            value = bool(value)
        else:
            raise BadInput(f"unknown CRL setting {name!r}")
        clean[name] = value
    for name, value in clean.items():
        setattr(row, name, value)
    row.updated_at = now
    session.flush()
    return row


def check_url(url: str, base: str | None = None) -> str:
    """A distribution point URL as given (white space around it removed; resolved against
    ``base`` when given, as a redirect's Location is), or BadInput with one clear sentence.

    The one rule for what a distribution point is, applied where points are added and where
    a fetch follows a redirect: HTTP(S) only, as the Expressway guide requires (the scheme in
    any case), with a host and a valid port, no user name or password (it would be stored,
    logged and shown in clear), no white space or control characters (checked before
    resolving, which would drop tabs and line breaks silently), at most ``MAX_URL``
    characters. Messages never show a password given in the URL."""
    text = _short_enough(url.strip())
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise BadInput(f"{short_url(text)!r}: a distribution point URL must not contain spaces "
                       "or control characters")
    try:
        text = urljoin(base, text) if base else text
        parts = urlsplit(text)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise BadInput(f"{short_url(text)!r}: {_plain_words(exc)}") from None
    shown = short_url(_short_enough(text))  # resolved, the length again
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise BadInput("only HTTP(S) distribution points are supported (the Expressway guide); "
                       f"{shown!r} is {scheme + ':' if scheme else 'not a URL'}")
    if not host:
        raise BadInput(f"{shown!r} has no host")
    if "@" in parts.netloc:
        raise BadInput(f"{shown!r}: distribution point URLs with a user name or password are "
                       "refused: they would be stored and shown in clear")
    return text


def _short_enough(url: str) -> str:
    if len(url) > MAX_URL:
        raise BadInput(f"distribution point URL longer than {MAX_URL} characters")
    return url


def short_url(url: str, limit: int = SHOWN_URL) -> str:
    """The URL for a message: no password (``safe_url``) and at most ``limit`` characters
    (a redirect may name a ``data:`` URL of kilobytes, or a query full of someone's
    secrets: an operator needs the start to recognise it, not the whole)."""
    shown = safe_url(url)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _plain_words(exc: BaseException) -> str:
    """urllib's complaint about a URL ("Port out of range 0-65535"), without the part of
    the URL it may quote."""
    text = str(exc)
    if "cast to integer" in text:
        return "the port is not a number"
    return text.split("'", 1)[0].strip(" :") or "not a valid URL"


def safe_url(url: str) -> str:
    """The URL with any ``user:password@`` replaced, for messages and logs (also when the
    URL cannot be parsed)."""
    head, slashes, rest = url.partition("//")
    if not slashes:
        return url
    ends = [at for at in map(rest.find, "/?#") if at != -1]
    userinfo, at, _hostport = rest[:min(ends, default=len(rest))].rpartition("@")
    return f"{head}//***@{rest[len(userinfo) + 1:]}" if at else url


def list_points(session: Session, origin: str | None = None) -> list[DistributionPoint]:
    query = select(DistributionPoint).order_by(DistributionPoint.id)
    if origin:
        query = query.where(DistributionPoint.origin == origin)
    return list(session.scalars(query))


def add_points(session: Session, urls: list[str], now: dt.datetime, *,
               origin: str = "configured") -> list[DistributionPoint]:
    """Add URLs (all checked first); a URL already there is left as it is. A CDP entry
    that is now configured by hand becomes a configured one."""
    clean = list(dict.fromkeys(check_url(url) for url in urls))
    known = {p.url: p for p in list_points(session)}
    added = []
    for url in clean:
        point = known.get(url)
        if point is None:
            point = DistributionPoint(url=url, origin=origin, issuers=[], added_at=now)
            session.add(point)
            added.append(point)
        elif origin == "configured" and point.origin != "configured":
            point.origin = "configured"
            added.append(point)
    session.flush()
    return added


def remove_points(session: Session, urls: list[str]) -> list[DistributionPoint]:
    known = {p.url: p for p in list_points(session)}
    missing = [u for u in urls if u.strip() not in known]
    if missing:
        raise NotFound(f"not a distribution point: {', '.join(missing)}; nothing removed")
    rows = [known[u.strip()] for u in dict.fromkeys(urls)]
    for row in rows:
        session.delete(row)
    _forget_failures_from(session, [row.url for row in rows])
    session.flush()
    return rows


def _forget_failures_from(session: Session, urls: list[str]) -> None:
    """A removed point's failures are no one's problem any more: clear the errors it left on
    issuers (their alerts resolve on the next tick; the installed CRLs stay)."""
    if urls:
        session.execute(update(CrlIssuerStatus).where(CrlIssuerStatus.source.in_(urls),
                                                      CrlIssuerStatus.error.is_not(None))
                        .values(error=None))


def parse_point_list(text: str) -> list[str]:
    """The guide's text form: one URL per line; blank lines and # comments ignored."""
    urls = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            urls.append(check_url(line))
        except BadInput as exc:
            raise BadInput(f"line {number}: {exc}") from None
    return urls


def replace_points(session: Session, urls: list[str], now: dt.datetime
                   ) -> tuple[list[str], list[str]]:
    """Make the configured list exactly ``urls``, keeping the status of URLs that stay."""
    clean = list(dict.fromkeys(check_url(u) for u in urls))
    current = {p.url: p for p in list_points(session, "configured")}
    removed = [url for url in current if url not in clean]
    for url in removed:
        session.delete(current[url])
    _forget_failures_from(session, removed)
    added = [p.url for p in add_points(session, [u for u in clean if u not in current], now)]
    session.flush()
    return added, removed


def sync_cdp_points(session: Session, sources: dict[str, list[str]], now: dt.datetime
                    ) -> None:
    """Keep the CDP-derived entries equal to the URLs the trusted CAs name today; a point
    that has not yet learned what it serves knows its issuers from them (any scope)."""
    for point in list_points(session, "cdp"):
        if point.url not in sources:
            session.delete(point)
    session.flush()
    add_points(session, [u for u in sources if _fetchable(u)], now, origin="cdp")
    for point in list_points(session):
        if not point.serves and sources.get(point.url):
            point.serves = [[key, None] for key in sources[point.url]]


def _fetchable(url: str) -> bool:
    try:
        check_url(url)
    except BadInput:
        return False
    return True



# ---------------------------------------------------------------- the network


@dataclass(frozen=True)
class CrlNetwork:
    """How fetches reach distribution points, from pkiq's own settings (``PKIQ_CRL_PROXY``,
    ``PKIQ_CRL_NO_PROXY``, ``PKIQ_CRL_ALLOW_INTERNAL``), never from ``HTTP_PROXY`` and its
    kin: a proxy taken silently from a service's environment would see every fetch and
    could answer for any CRL. ``no_proxy`` and ``allow_internal`` hold host names (a name
    also covers its subdomains, as curl reads NO_PROXY), IP addresses, networks, or "*"."""

    proxy: str | None = None  # http://[user:password@]host:port
    no_proxy: tuple[str, ...] = ()  # reached directly, not through the proxy
    allow_internal: tuple[str, ...] = ()  # internal hosts a public point may redirect to

    def proxy_for(self, url: str) -> str | None:
        if self.proxy is None or host_listed(urlsplit(url).hostname or "", self.no_proxy):
            return None
        return self.proxy

    def internal_allowed(self, host: str, address: str) -> bool:
        return host_listed(host, self.allow_internal) or \
            host_listed(address, self.allow_internal)

    def __repr__(self) -> str:
        proxy = safe_url(self.proxy) if self.proxy else None
        return (f"CrlNetwork(proxy={proxy!r}, no_proxy={self.no_proxy!r}, "
                f"allow_internal={self.allow_internal!r})")


def crl_network(proxy: str | None = None, no_proxy: str | None = None,
                allow_internal: str | None = None) -> CrlNetwork:
    """The settings' text, checked (BadInput naming the value that is wrong)."""
    return CrlNetwork(check_proxy(proxy) if proxy and proxy.strip() else None,
                      host_list(no_proxy or ""), host_list(allow_internal or ""))


def check_proxy(url: str) -> str:
    """An HTTP proxy URL: ``http://host:port`` (HTTPS distribution points go through it with
    CONNECT), optionally with ``user:password@`` for the proxy's Basic authentication."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise BadInput(f"proxy {short_url(text)!r}: {_plain_words(exc)}") from None
    if parts.scheme.lower() != "http" or not host:
        raise BadInput(f"proxy {short_url(text)!r}: give it as http://HOST:PORT (an HTTP "
                       "proxy; HTTPS distribution points are reached through it by CONNECT)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadInput(f"proxy {short_url(text)!r}: a proxy URL has no path or query")
    return text


def host_list(text: str) -> tuple[str, ...]:
    """Host names, IP addresses or networks separated by commas or spaces, normalised
    (lower case, no leading dot, networks in their canonical form)."""
    entries = []
    for raw in re.split(r"[,\s]+", text.strip()):
        if not raw:
            continue
        entry = raw.lower().strip("[]")
        try:
            entries.append(str(ipaddress.ip_network(entry, strict=False)))
            continue
        except ValueError:
            pass
        name = entry.removeprefix(".")
        if entry != "*" and not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
                                             r"(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*", name):
            raise BadInput(f"{raw[:60]!r} is not a host name, an IP address or a network")
        entries.append(name)
    return tuple(dict.fromkeys(entries))


def host_listed(host: str, entries: tuple[str, ...]) -> bool:
    """Whether ``host`` (a name or an address) is one of ``entries`` (``host_list``)."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in entries:
        if entry == "*":
            return True
        if "/" in entry:
            if address is not None and address in ipaddress.ip_network(entry):
                return True
        elif host == entry or host.endswith("." + entry):
            return True
    return False
