"""Subject alternative names by type: which GeneralName types a profile allows, and the
syntax each allowed type must have before pkiq puts it in a certificate.

Relying parties match on these names (TLS host names, IP addresses, mail addresses), so a
name that is not what it looks like, or of a type the certificate is not for (an
``otherName`` UPN logs a user into Windows, a ``directoryName`` can read like a CA), is
refused, naming the type and the rule, rather than copied from the request.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna
from cryptography import x509

from .confined import shown as quoted
from .errors import PolicyViolation

# The short names OpenSSL's config and ``-text`` use, which the profiles list.
DNS, IP, EMAIL, URI = "DNS", "IP", "email", "URI"
CHECKED_TYPES = (DNS, IP, EMAIL, URI)
_TYPE_NAMES = {
    x509.DNSName: DNS,
    x509.IPAddress: IP,
    x509.RFC822Name: EMAIL,
    x509.UniformResourceIdentifier: URI,
    x509.DirectoryName: "dirName",
    x509.OtherName: "otherName",
    x509.RegisteredID: "RID",
}
_LDH_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# RFC 5321 4.1.2 Dot-string: atoms of atext joined by single dots (no quoted local parts,
# which mail systems and TLS clients treat inconsistently).
_DOT_STRING = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
# RFC 3986 characters: unreserved, reserved and '%' (escapes are checked separately).
_URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
MAX_DNS_NAME = 253
MAX_MAILBOX = 254  # RFC 5321 4.5.3.1.3 (a path of 256 octets, less the angle brackets)
MAX_URI = 2048


def type_name(name: x509.GeneralName) -> str:
    return _TYPE_NAMES.get(type(name), type(name).__name__)


def describe(name: x509.GeneralName) -> str:
    """``DNS:host``, ``IP:10.0.0.1`` or ``dirName:CN=...`` as ``openssl x509 -text`` shows."""
    value = name.value
    if isinstance(name, x509.DirectoryName):
        value = value.rfc4514_string()
    elif isinstance(name, x509.OtherName):
        value = name.type_id.dotted_string
    elif isinstance(name, x509.RegisteredID):
        value = value.dotted_string
    text = f"{type_name(name)}:{value}"
    return text if len(text) <= 80 else text[:77] + "..."


def check_general_names(names: list[x509.GeneralName], allowed: tuple[str, ...],
                        profile: str) -> tuple[list[x509.GeneralName], list[str]]:
    """The names to issue, in the request's order without repeats, or ``PolicyViolation``
    for the first one of a type the profile does not allow or with a broken syntax."""
    out: list[x509.GeneralName] = []
    warnings: list[str] = []
    for name in names:
        kind = type_name(name)
        if kind not in allowed:
            raise PolicyViolation(
                f"subjectAltName {describe(name)} refused: profile {profile} allows "
                f"{', '.join(allowed) or 'no subjectAltName'} only", "subjectAltName",
                f"type-{kind}")
        _CHECKS[kind](name)
        if name in out:
            warnings.append(f"subjectAltName {describe(name)} is listed twice; issued once")
            continue
        out.append(name)
    return out, warnings


def check_dns_name(name: str, what: str = "subjectAltName DNS") -> None:
    """A host name as RFC 5280 4.2.1.6 and RFC 1034 have it: ASCII LDH labels of 1-63
    characters, at most 253 in all, internationalised labels in their ``xn--`` A-label
    form (IDNA 2008) and valid as such, no wildcard (Expressway supports none), no trailing
    dot and no IP address written as a name."""
    shown = quoted(name, 80)
    if "*" in name:
        raise PolicyViolation(f"wildcard name {shown} refused: Expressway does not support "
                              "wildcard certificates; list each FQDN as a SAN",
                              "subjectAltName", "no-wildcard")
    if not name.isascii():
        try:
            hint = f" (its A-label form is {idna.encode(name).decode('ascii')})"
        except idna.IDNAError:
            hint = ""
        raise PolicyViolation(f"{what} {shown} is not ASCII: internationalised names go in "
                              f"their xn-- A-label form{hint}", "subjectAltName", "dns-idna")
    if is_ip(name):
        raise PolicyViolation(f"{what} {shown} is an IP address: request it as an IP "
                              "subjectAltName, not a DNS one", "subjectAltName", "dns-syntax")
    labels = name.split(".")
    if len(name) > MAX_DNS_NAME or not all(_LDH_LABEL.match(label) for label in labels):
        raise PolicyViolation(f"{what} {shown} is not a valid host name (letters, digits and "
                              "hyphens in dot-separated labels of 1-63 characters, at most "
                              f"{MAX_DNS_NAME} in all, no trailing dot)",
                              "subjectAltName", "dns-syntax")
    if labels[-1].isdigit():
        raise PolicyViolation(f"{what} {shown} ends in an all-numeric label, which no "
                              "top-level domain is", "subjectAltName", "dns-syntax")
    for label in labels:
        if label[2:4] == "--" and label[:4].lower() != "xn--":
            raise PolicyViolation(f"{what} {shown}: label {label!r} has hyphens in the third "
                                  "and fourth places, which IDNA reserves", "subjectAltName",
                                  "dns-idna")
        if label[:4].lower() == "xn--":
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise PolicyViolation(f"{what} {shown}: {label!r} is not a valid IDNA "
                                      "A-label", "subjectAltName", "dns-idna") from None


def _check_dns(name: x509.DNSName) -> None:
    check_dns_name(name.value)


def _check_ip(name: x509.IPAddress) -> None:
    value = name.value
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        raise PolicyViolation(
            f"subjectAltName IP:{value} refused: an IP address SAN is 4 octets (IPv4) or 16 "
            f"(IPv6); this one is {len(value.network_address.packed) * 2}, an address and "
            "mask, which only name constraints use", "subjectAltName", "ip-syntax")
    if value.is_unspecified or value.is_multicast:
        raise PolicyViolation(f"subjectAltName IP:{value} refused: an unspecified or "
                              "multicast address names no host", "subjectAltName", "ip-syntax")


def check_mailbox(value: str, what: str = "subjectAltName email") -> None:
    """An RFC 5321 mailbox: ASCII ``local-part@domain``, the local part a dot-string of at
    most 64 characters, the domain a host name."""
    shown = quoted(value, 80)
    local, at, domain = value.rpartition("@")
    if not at or not value.isascii() or len(value) > MAX_MAILBOX or len(local) > 64 \
            or not _DOT_STRING.match(local):
        raise PolicyViolation(f"{what} {shown} is not an RFC 5321 mailbox (local-part@domain, "
                              "ASCII, local part a dot-string of at most 64 characters)",
                              "subjectAltName", "email-syntax")
    check_dns_name(domain, what=f"the domain of {what} {shown}:")


def _check_email(name: x509.RFC822Name) -> None:
    check_mailbox(name.value)


def _check_uri(name: x509.UniformResourceIdentifier) -> None:
    value = name.value
    shown = quoted(value, 80)
    rule = ("is not an absolute RFC 3986 URI with a host (RFC 5280 4.2.1.6: scheme://host..., "
            "ASCII, at most 2048 characters)")
    if len(value) > MAX_URI or not value.isascii() or not _URI_CHARS.match(value) or \
            re.search(r"%(?![0-9A-Fa-f]{2})", value):
        raise PolicyViolation(f"subjectAltName URI:{shown} {rule}", "subjectAltName",
                              "uri-syntax")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise PolicyViolation(f"subjectAltName URI:{shown} {rule}", "subjectAltName",
                              "uri-syntax") from None
    if not _URI_SCHEME.match(parts.scheme or "") or not parts.netloc or not host:
        raise PolicyViolation(f"subjectAltName URI:{shown} {rule}", "subjectAltName",
                              "uri-syntax")
    if parts.username is not None or parts.password is not None:
        raise PolicyViolation(f"subjectAltName URI:{shown} refused: it carries user "
                              "information (credentials)", "subjectAltName", "uri-syntax")
    if not is_ip(host):
        check_dns_name(host, what=f"the host of subjectAltName URI:{shown}:")


_CHECKS = {DNS: _check_dns, IP: _check_ip, EMAIL: _check_email, URI: _check_uri}


def is_ip(name: str) -> bool:
    """Whether ``name`` is an IPv4 or IPv6 address written as text."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False
