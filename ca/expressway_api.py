"""What pkiq knows of an Expressway's REST API, without talking to one: the endpoints and
field names (configuration, with defaults from Cisco's X8.10 reference), which of them a
node says it serves (its ``/api/raml``), what its read-back answers hold, and how what a
node holds differs from what pkiq says it should hold (drift).

Expressway releases name their REST resources differently (``/api/provisioning/...`` in
X8.10, ``/api/v1/provisioning/...`` in later ones), and Cisco's reference lists the
certificate resources ``certs/server``, ``certs/root`` and ``certs/generate_csr`` but no
restart resource; so every path and field is a setting per node, and the publisher asks the
node's RAML before it calls a path, instead of finding out from a 404 half-way through.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import yaml
from cryptography import x509

from .encoding import EncodingError, pem_blocks
from .errors import BadInput
from .trust import fingerprint

# Cisco Expressway REST API reference X8.10: the certificate resources under
# /api/provisioning/. ``restart`` and ``trusted_delete`` are not in that reference's
# certificate section: a site sets them to its release's names; the publisher calls them only
# when the node's RAML describes them.
RELEASES: dict[str, dict[str, str]] = {
    "x8.10": {
        "raml": "/api/raml",
        "server": "/api/provisioning/certs/server",
        "trusted": "/api/provisioning/certs/root",
        "trusted_delete": "/api/provisioning/certs/root/{fingerprint}",
        "csr": "/api/provisioning/certs/generate_csr",
        "restart": "/api/provisioning/restart",
        "cert_field": "file",
        "key_field": "key",
        "ca_field": "file",
    },
}
# Later releases keep the resource names under a versioned root.
RELEASES["v1"] = {name: value.replace("/api/provisioning/", "/api/v1/provisioning/")
                  for name, value in RELEASES["x8.10"].items()}
DEFAULT_RELEASE = "x8.10"
PATH_KEYS = ("raml", "server", "trusted", "trusted_delete", "csr", "restart")
FIELD_KEYS = ("cert_field", "key_field", "ca_field")
PROFILE_KEYS = PATH_KEYS + FIELD_KEYS
_PATH = re.compile(r"^/[A-Za-z0-9._~\-/{}]{0,200}$")
_FIELD = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_RAML_RESOURCES = 5000
MAX_RAML_BYTES = 256 * 1024  # Cisco's whole API description is a fraction of this
EXPIRY_WARNING = dt.timedelta(days=30)


@dataclass(frozen=True)
class ApiProfile:
    """The paths and multipart field names pkiq uses with one node."""

    release: str
    paths: dict[str, str]
    fields: dict[str, str]

    def view(self) -> dict:
        return {"release": self.release, **self.paths, **self.fields}


def profile(release: str | None, overrides: Mapping[str, str] | None = None) -> ApiProfile:
    """The profile of ``release`` (default X8.10) with a node's own overrides. An empty
    path switches that call off (``raml=`` skips the RAML check, for a release that does
    not serve one)."""
    name = (release or DEFAULT_RELEASE).lower()
    if name not in RELEASES:
        raise BadInput(f"unknown Expressway API release {release!r}: use one of "
                       f"{', '.join(sorted(RELEASES))}, and set single paths with "
                       "--endpoint NAME=PATH")
    values = dict(RELEASES[name])
    for key, value in (overrides or {}).items():
        values[key] = check_profile_value(key, value)
    return ApiProfile(name, {k: values[k] for k in PATH_KEYS},
                      {k: values[k] for k in FIELD_KEYS})


def check_profile_value(key: str, value: str) -> str:
    if key not in PROFILE_KEYS:
        raise BadInput(f"unknown endpoint setting {key!r}: the settings are "
                       f"{', '.join(PROFILE_KEYS)}")
    if key in FIELD_KEYS:
        if not _FIELD.match(value):
            raise BadInput(f"{key}={value!r}: a multipart field name is letters, digits, "
                           "'_', '.' or '-'")
        return value
    if value == "" and key not in ("server", "trusted"):
        return value
    if not _PATH.match(value) or "//" in value or "/../" in value + "/" or \
            "/./" in value + "/":
        raise BadInput(f"{key}={value!r}: an endpoint is an absolute path such as "
                       "/api/provisioning/certs/server (no scheme, host or query)")
    return value


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``NAME=PATH`` pairs from the command line."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise BadInput(f"{item!r}: write NAME=PATH, e.g. restart=/api/provisioning/restart")
        out[key.strip()] = check_profile_value(key.strip(), value.strip())
    return out


# ---------------------------------------------------------------- RAML

# libyaml's safe loader when PyYAML was built with it (the Debian and PyPI wheels are): the
# same safe subset as yaml.SafeLoader, in C.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

def described_paths(raml: bytes) -> set[tuple[str, str]]:
    """(METHOD, path) pairs a RAML 1.0 (or 0.8) document describes: resources are keys
    beginning with '/', nested resources add to their parent's path, and the path part of
    ``baseUri`` comes first. Parsed with yaml.safe_load; aliases are walked once each, and
    at most MAX_RAML_RESOURCES resources are read (a document built to explode is refused)."""
    if len(raml) > MAX_RAML_BYTES:
        raise BadInput(f"the node's RAML is {len(raml):,} bytes, more than the "
                       f"{MAX_RAML_BYTES:,} pkiq reads: refused")
    try:
        document = yaml.load(raml.decode("utf-8", "replace"), Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise BadInput(f"the node's RAML is not valid YAML: {str(exc).splitlines()[0]}"
                       ) from None
    except RecursionError:
        raise BadInput("the node's RAML is nested too deep: refused") from None
    if not isinstance(document, dict):
        raise BadInput("the node's RAML is not a RAML document (no resources)")
    base = ""
    base_uri = document.get("baseUri")
    if isinstance(base_uri, str):
        match = re.match(r"^(?:[a-z]+://)?[^/]*(/.*)?$", base_uri.strip())
        base = (match.group(1) or "").rstrip("/") if match else ""
    found: set[tuple[str, str]] = set()
    seen: set[int] = set()
    stack = [(base, document)]
    resources = 0
    while stack:
        prefix, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key, value in node.items():
            if not isinstance(key, str):
                continue
            if key.startswith("/"):
                resources += 1
                if resources > MAX_RAML_RESOURCES:
                    raise BadInput(f"the node's RAML describes more than "
                                   f"{MAX_RAML_RESOURCES} resources: refused")
                path = prefix + key.rstrip("/")
                found.add(("RESOURCE", path))
                if isinstance(value, dict):
                    stack.append((path, value))
            elif prefix and key.lower() in ("get", "post", "put", "delete", "patch"):
                found.add((key.upper(), prefix))
    return found


def _template(path: str) -> re.Pattern:
    parts = [r"[^/]+" if re.fullmatch(r"\{[^/]+\}", part) else re.escape(part)
             for part in path.split("/")]
    return re.compile("^" + "/".join(parts) + "$")


def describes(described: set[tuple[str, str]], method: str, path: str) -> bool:
    """Whether the RAML has ``method`` on ``path``; a ``{parameter}`` segment on either side
    matches any segment of the other."""
    wanted = _template(path)
    for have_method, have_path in described:
        if have_method != method:
            continue
        if have_path == path or wanted.match(have_path) or _template(have_path).match(path):
            return True
    return False


# ---------------------------------------------------------------- read-back

MAX_STRINGS = 10_000


def certificates_in(body: bytes, content_type: str = "") -> list[x509.Certificate]:
    """Every certificate a read-back answer carries, in order: PEM text as is, or JSON whose
    strings hold PEM (a JSON answer escapes the line breaks, so its strings are decoded
    first). Garbage in the answer is a BadInput naming what was wrong."""
    texts: list[bytes] = []
    if "json" in content_type or body.lstrip()[:1] in (b"{", b"["):
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise BadInput(f"the node's answer is not valid JSON "
                           f"({str(exc)[:100] or 'nested too deep'})") from None
        stack = deque([document])  # breadth first, in document order
        while stack and len(texts) < MAX_STRINGS:
            item = stack.popleft()
            if isinstance(item, str):
                if "-----BEGIN" in item:
                    texts.append(item.encode("utf-8", "replace"))
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    else:
        texts.append(body)
    certs = []
    for text in texts:
        try:
            for block in pem_blocks(text, ["CERTIFICATE"]):
                certs.append(x509.load_der_x509_certificate(block.der))
        except (EncodingError, ValueError) as exc:
            raise BadInput(f"the node's answer holds a certificate that does not parse: "
                           f"{exc}") from None
    return certs


def message_of(body: bytes, limit: int = 500) -> str:
    """The node's own words from an error answer: a JSON ``Message``/``message``/``error``/
    ``detail`` string, else the text; control characters removed, cut at ``limit``."""
    text = body[:20_000].decode("utf-8", "replace")
    document = _json(text)
    if isinstance(document, dict):
        for key in ("Message", "message", "Error", "error", "detail", "Detail"):
            value = document.get(key)
            if isinstance(value, str) and value.strip():
                text = value
                break
            if isinstance(value, list) and value:
                text = "; ".join(str(v) for v in value)
                break
    text = re.sub(r"<[^>]{0,200}>", " ", text)  # an HTML page: its words
    return _clean(_PEM_BLOCK.sub("[PEM block left out]", text), limit)


# A node that echoes what it was sent must not put a key into a log line or an alert.
_PEM_BLOCK = re.compile(r"-----BEGIN [^-]{1,60}-----.*?(?:-----END [^-]{1,60}-----|\Z)",
                        re.DOTALL)


def _json(text: str | bytes):
    """A JSON answer, or None for anything else (nested too deep included)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _clean(text: str, limit: int) -> str:
    """One line of printable text at most ``limit`` long: a node's words go into errors,
    logs and alerts, where a control character could forge a line."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def warnings_of(body: bytes) -> list[str]:
    document = _json(body[:200_000])
    if isinstance(document, dict) and isinstance(document.get("warnings"), list):
        return [_clean(str(w), 300) for w in document["warnings"][:20]]
    return []


def restart_required(body: bytes) -> bool | None:
    """What an upload answer says about a restart: True, False, or None if it says
    nothing (then pkiq assumes one is needed, as the guide says for server certificates)."""
    document = _json(body[:200_000])
    if isinstance(document, dict):
        for key in ("restart_required", "RestartRequired", "restartRequired"):
            if isinstance(document.get(key), bool):
                return document[key]
    text = body[:20_000].decode("utf-8", "replace").lower()
    return True if "restart" in text else None


# ---------------------------------------------------------------- drift

@dataclass(frozen=True)
class Finding:
    """One way a node differs from what pkiq says it should hold."""

    kind: str  # server | server-expiry | missing-ca | extra-ca | crl-fetch | unreachable
    severity: str  # critical | warning
    text: str
    details: dict = field(default_factory=dict)

    def view(self) -> dict:
        return {"kind": self.kind, "severity": self.severity, "text": self.text,
                "details": self.details}


def _describe(cert: x509.Certificate) -> str:
    return (f"{cert.subject.rfc4514_string()} (SHA-256 {fingerprint(cert)[:16]}..., "
            f"notAfter {cert.not_valid_after_utc:%Y-%m-%d})")


def compare(expected_server: x509.Certificate | None, expected_trusted: Iterable[x509.Certificate],
            held_server: x509.Certificate | None, held_trusted: Iterable[x509.Certificate],
            now: dt.datetime, managed: frozenset[str] = frozenset()) -> list[Finding]:
    """What differs, by SHA-256 fingerprint: the server certificate (and its notAfter, as a
    node's certificate close to expiry is drift waiting to happen), CAs the node lacks, CAs
    pkiq put there that its list no longer holds (``managed``: still trusted, though pkiq
    stopped trusting them), and CAs it holds that pkiq did not put there."""
    found = []
    if expected_server is not None:
        if held_server is None:
            found.append(Finding("server", "critical", "the node reports no server certificate",
                                 {"expected": fingerprint(expected_server)}))
        elif fingerprint(held_server) != fingerprint(expected_server):
            found.append(Finding(
                "server", "critical",
                f"the node holds server certificate {_describe(held_server)}, not "
                f"{_describe(expected_server)}",
                {"held": fingerprint(held_server), "expected": fingerprint(expected_server),
                 "held_not_after": held_server.not_valid_after_utc.isoformat(),
                 "expected_not_after": expected_server.not_valid_after_utc.isoformat()}))
    if held_server is not None:
        left = held_server.not_valid_after_utc - now
        if left <= dt.timedelta(0):
            found.append(Finding("server-expiry", "critical",
                                 f"the node's server certificate expired at "
                                 f"{held_server.not_valid_after_utc:%Y-%m-%d %H:%M}Z",
                                 {"held": fingerprint(held_server)}))
        elif left <= EXPIRY_WARNING:
            found.append(Finding("server-expiry", "warning",
                                 f"the node's server certificate expires at "
                                 f"{held_server.not_valid_after_utc:%Y-%m-%d %H:%M}Z "
                                 f"(in {left.days} days)", {"held": fingerprint(held_server)}))
    want = {fingerprint(c): c for c in expected_trusted}
    have = {fingerprint(c): c for c in held_trusted}
    for fp in sorted(set(want) - set(have)):
        found.append(Finding("missing-ca", "critical",
                             f"the node's trusted CA list lacks {_describe(want[fp])}",
                             {"sha256": fp, "subject": want[fp].subject.rfc4514_string()}))
    for fp in sorted((set(have) - set(want)) & managed):
        found.append(Finding("retired-ca", "critical",
                             f"the node still trusts {_describe(have[fp])}, which pkiq put "
                             "there and its trusted list no longer holds: push to remove it",
                             {"sha256": fp, "subject": have[fp].subject.rfc4514_string()}))
    for fp in sorted(set(have) - set(want) - managed):
        found.append(Finding("extra-ca", "warning",
                             f"the node trusts {_describe(have[fp])}, which pkiq did not put "
                             "there", {"sha256": fp, "subject": have[fp].subject.rfc4514_string()}))
    return found


def crl_fetch_finding(last_fetch: dt.datetime | None, within: dt.timedelta | None,
                      now: dt.datetime, since: dt.datetime) -> Finding | None:
    """Whether the node fetched its CRL bundle from pkiq recently enough. ``since``: when
    pkiq started expecting it (the node's API settings were made), so a node added an hour
    ago is not drift."""
    if within is None:
        return None
    if last_fetch is None:
        if now - since < within:
            return None
        return Finding("crl-fetch", "warning",
                       f"the node has not fetched its CRL bundle from pkiq in the "
                       f"{within.total_seconds() / 3600:g} h since it was set up: check its "
                       "CRL update settings (Maintenance > Security > CRL management)", {})
    if now - last_fetch > within:
        return Finding("crl-fetch", "warning",
                       f"the node last fetched its CRL bundle at {last_fetch:%Y-%m-%d %H:%M}Z, "
                       f"more than {within.total_seconds() / 3600:g} h ago: it may be "
                       "checking against stale CRLs",
                       {"last_fetch": last_fetch.isoformat()})
    return None
