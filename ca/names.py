"""Distinguished names in the spellings PKI engineers type and OpenSSL writes."""

from __future__ import annotations

import re
import unicodedata
import warnings

from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from .errors import BadInput, PolicyViolation
from .general_names import check_mailbox

# OpenSSL's long names (used in policy sections) and short names (used in /C=../CN=.. DNs).
_FIELDS = [
    ("countryName", "C", NameOID.COUNTRY_NAME),
    ("stateOrProvinceName", "ST", NameOID.STATE_OR_PROVINCE_NAME),
    ("localityName", "L", NameOID.LOCALITY_NAME),
    ("organizationName", "O", NameOID.ORGANIZATION_NAME),
    ("organizationalUnitName", "OU", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("commonName", "CN", NameOID.COMMON_NAME),
    ("emailAddress", "emailAddress", NameOID.EMAIL_ADDRESS),
    ("serialNumber", "serialNumber", NameOID.SERIAL_NUMBER),
    ("domainComponent", "DC", NameOID.DOMAIN_COMPONENT),
    ("title", "title", NameOID.TITLE),
    ("givenName", "GN", NameOID.GIVEN_NAME),
    ("surname", "SN", NameOID.SURNAME),
    ("pseudonym", "pseudonym", NameOID.PSEUDONYM),
    ("userId", "UID", NameOID.USER_ID),
    ("street", "street", NameOID.STREET_ADDRESS),
    ("postalCode", "postalCode", NameOID.POSTAL_CODE),
]
LONG_BY_OID = {oid: long for long, _, oid in _FIELDS}
SHORT_BY_OID = {oid: short for _, short, oid in _FIELDS}
_OID_BY_ANY = {k.lower(): oid for long, short, oid in _FIELDS for k in (long, short)}
_OID_BY_ANY["e"] = NameOID.EMAIL_ADDRESS
_OID_BY_ANY["email"] = NameOID.EMAIL_ADDRESS
_OID_BY_ANY["s"] = NameOID.STATE_OR_PROVINCE_NAME


def field_oid(name: str) -> x509.ObjectIdentifier:
    """The OID of a DN field given by its long (policy) or short name."""
    oid = _OID_BY_ANY.get(name.strip().lower())
    if oid is None:
        raise BadInput(f"unknown distinguished-name field {name!r}")
    return oid


def long_name(oid: x509.ObjectIdentifier) -> str:
    return LONG_BY_OID.get(oid, oid.dotted_string)


_IA5_FIELDS = {NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT}
_LDH_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_PRINTABLE_FIELDS = {NameOID.COUNTRY_NAME, NameOID.SERIAL_NUMBER}  # X.520: PrintableString
_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")

# Upper bounds in characters: RFC 5280 Appendix A (ub-common-name and friends); X.520's where
# RFC 5280 names none (postal code, street); a DNS label for domainComponent. Longer values
# are invalid ASN.1 for relying parties that check (pkilint does), so they are refused.
UPPER_BOUNDS = {
    NameOID.COMMON_NAME: 64,
    NameOID.ORGANIZATION_NAME: 64,
    NameOID.ORGANIZATIONAL_UNIT_NAME: 64,
    NameOID.TITLE: 64,
    NameOID.SERIAL_NUMBER: 64,
    NameOID.LOCALITY_NAME: 128,
    NameOID.STATE_OR_PROVINCE_NAME: 128,
    NameOID.PSEUDONYM: 128,
    NameOID.STREET_ADDRESS: 128,
    NameOID.POSTAL_CODE: 40,
    NameOID.EMAIL_ADDRESS: 255,
    NameOID.DOMAIN_COMPONENT: 63,
    NameOID.GIVEN_NAME: 32768,
    NameOID.SURNAME: 32768,
}
UNLISTED_BOUND = 256  # attribute types pkiq has no bound for (kept only with preserve_dn)

# Unicode categories no name should hold: controls (Cc: they break index.txt and logs),
# format characters (Cf: bidirectional overrides such as U+202E that make a name read
# differently from what it is, zero-width characters that make two names look alike),
# line and paragraph separators, surrogates, private use and unassigned code points.
_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character (bidirectional override, zero-width)",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
}


def checked_attribute(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute:
    """One DN attribute, refused (not warned about) when RFC 5280 or DER would object."""
    check_value(oid, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return x509.NameAttribute(oid, value, _string_type(oid))
        except (ValueError, UserWarning) as exc:
            raise BadInput(f"{long_name(oid)}: {exc}") from None


def check_value(oid: x509.ObjectIdentifier, value: str) -> None:
    """The character and length rules every DN value must pass, wherever it comes from."""
    field = long_name(oid)
    for char in value:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            raise BadInput(f"{field} contains {_REFUSED_CATEGORIES[category]} "
                           f"(U+{ord(char):04X}); refused")
    if not value.strip():
        raise BadInput(f"{field} is empty")
    bound = UPPER_BOUNDS.get(oid, UNLISTED_BOUND)
    if len(value) > bound:
        raise BadInput(f"{field} is {len(value)} characters; RFC 5280 allows at most {bound}")
    if oid in _IA5_FIELDS and not value.isascii():
        raise BadInput(f"{field} must be ASCII (an IA5String)")
    if oid == NameOID.COUNTRY_NAME and not (len(value) == 2 and value.isascii()
                                            and value.isalpha() and value.isupper()):
        raise BadInput(f"countryName must be a two-letter ISO 3166 code in capitals "
                       f"(such as GB), not {value[:8]!r}")
    if oid == NameOID.EMAIL_ADDRESS:
        check_mailbox(value, what=field)
    if oid == NameOID.DOMAIN_COMPONENT and not _LDH_LABEL.match(value):
        raise BadInput(f"domainComponent {value[:63]!r} is not a DNS label (RFC 4519: letters, "
                       "digits and hyphens, 1-63 characters)")
    if oid in _PRINTABLE_FIELDS and not set(value) <= _PRINTABLE:
        raise BadInput(f"{field} may hold only PrintableString characters (letters, digits, "
                       "space and '()+,-./:=?)")


def check_name(name: x509.Name, what: str = "subject", *, ca: bool = False) -> None:
    """Every attribute of every RDN, not only the last CN: the rules above for each value;
    one attribute per RDN (a multi-valued RDN such as ``CN=a+O=b`` hides a CN from tools that
    read one attribute per RDN); at most one commonName (with two, which one a relying party
    checks differs: ``openssl verify -verify_hostname`` accepts either); and a CA's subject
    may not be empty (RFC 5280 4.1.2.6: a CA's subject is the issuer name of all it signs)."""
    if ca and not len(name):
        raise PolicyViolation(f"the {what} of a CA may not be empty: RFC 5280 needs a CA's "
                              "name to be the issuer of what it signs (give at least a CN)",
                              "subject", "non-empty")
    for rdn in name.rdns:
        if len(rdn) > 1:
            raise PolicyViolation(
                f"the {what} has a multi-valued RDN ({rdn.rfc4514_string()[:80]}); pkiq "
                "issues one attribute per RDN", "subject", "single-valued-rdn")
        for attr in rdn:
            if not isinstance(attr.value, str):
                raise BadInput(f"{long_name(attr.oid)} in the {what} is not a string")
            check_value(attr.oid, attr.value)
    if len(name.get_attributes_for_oid(NameOID.COMMON_NAME)) > 1:
        raise PolicyViolation(f"the {what} has more than one commonName; at most one is "
                              "allowed, so that every relying party checks the same name",
                              "commonName", "at-most-one")


def without_email(name: x509.Name) -> tuple[x509.Name, list[str]]:
    """The name without emailAddress, as ``openssl ca`` with ``email_in_dn = no``: RFC 5280
    4.1.2.6 puts e-mail addresses in the subjectAltName (the DN attribute is deprecated,
    and must be repeated there), and pkiq's profiles issue no e-mail SAN."""
    kept = [attr for attr in name if attr.oid != NameOID.EMAIL_ADDRESS]
    if len(kept) == len(name):
        return name, []
    return x509.Name(kept), ["emailAddress left out of the subject (RFC 5280 4.1.2.6 puts "
                             "e-mail addresses in the subjectAltName, which TLS "
                             "certificates do not carry)"]


def check_no_email(name: x509.Name) -> None:
    """A CA's own subject: refused with emailAddress rather than changed behind its back."""
    if name.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        raise PolicyViolation("a CA subject may not hold emailAddress: RFC 5280 4.1.2.6 puts "
                              "e-mail addresses in the subjectAltName, which CA certificates "
                              "do not carry; leave it out", "emailAddress", "not-in-dn")


def canonical_name(name: x509.Name) -> x509.Name:
    """The name re-encoded as pkiq issues names, whatever string types the request used
    (TeletexString, BMPString, UniversalString): UTF8String, except PrintableString for
    countryName and serialNumber and IA5String for emailAddress and domainComponent (RFC 5280
    4.1.2.6 and Appendix A), as ``openssl ca`` does with ``string_mask = utf8only``."""
    return x509.Name([x509.NameAttribute(attr.oid, attr.value, _string_type(attr.oid))
                      for attr in name])


def _string_type(oid: x509.ObjectIdentifier) -> _ASN1Type:
    if oid in _PRINTABLE_FIELDS:
        return _ASN1Type.PrintableString
    if oid in _IA5_FIELDS:
        return _ASN1Type.IA5String
    return _ASN1Type.UTF8String


def parse_name(text: str) -> x509.Name:
    """Parse ``/C=GB/O=Example/CN=host`` (OpenSSL) or ``CN=host,O=Example,C=GB`` (RFC 4514)."""
    text = text.strip()
    if not text:
        raise BadInput("empty subject name")
    if text.startswith("/"):
        pairs = _split_escaped(text[1:], "/")
        rdn_order = pairs  # OpenSSL order is already most significant first
    else:
        pairs = _split_escaped(text, ",")
        rdn_order = list(reversed(pairs))  # RFC 4514 writes the most specific RDN first
    attrs = []
    for pair in rdn_order:
        key, sep, value = pair.partition("=")
        if not sep or not value.strip():
            raise BadInput(f"cannot read {pair!r} in subject {text!r}: expected FIELD=value")
        attrs.append(checked_attribute(field_oid(key), value.strip()))
    name = x509.Name(attrs)
    check_name(name)
    return name


def _split_escaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in (part.strip() for part in parts) if p]


def openssl_oneline(name: x509.Name) -> str:
    """The ``/C=GB/O=Example/CN=host`` form OpenSSL writes in index.txt (X509_NAME_oneline):
    bytes outside printable ASCII become ``\\xHH``, so a value can never break a line."""
    out = []
    for attr in name:
        short = SHORT_BY_OID.get(attr.oid, attr.oid.dotted_string)
        raw = attr.value if isinstance(attr.value, bytes) else str(attr.value).encode("utf-8")
        value = "".join(chr(b) if 0x20 <= b <= 0x7E else f"\\x{b:02X}" for b in raw)
        out.append(f"/{short}={value}")
    return "".join(out)


_DOTTED_OID = re.compile(r"^[0-2](\.[0-9]+)+$")
_HEX_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")


def oneline_pairs(text: str) -> list[tuple[str, str]]:
    """(dotted OID, value) per attribute of a name in ``openssl_oneline``'s form, read back
    leniently for lookups: ``\\xHH`` escapes are UTF-8 bytes again, and a ``/`` not followed
    by a known field (short or long name, or a dotted OID) and ``=`` belongs to the value,
    as in ``/CN=AC/DC Root``, which openssl writes without escaping."""
    pairs: list[tuple[str, str]] = []
    for segment in text.strip().lstrip("/").split("/"):
        key, sep, value = segment.partition("=")
        oid = _OID_BY_ANY.get(key.strip().lower()) if sep else None
        if oid is None and sep and _DOTTED_OID.match(key.strip()):
            oid = x509.ObjectIdentifier(key.strip())
        if oid is None:
            if not pairs:
                raise BadInput(f"cannot read {text[:80]!r} as a distinguished name: "
                               f"{segment[:40]!r} is not FIELD=value")
            pairs[-1] = (pairs[-1][0], f"{pairs[-1][1]}/{segment}")
            continue
        pairs.append((oid.dotted_string, value))
    return [(oid, _unescape(value)) for oid, value in pairs]


def _unescape(value: str) -> str:
    raw = bytearray()
    at = 0
    for match in _HEX_ESCAPE.finditer(value):
        raw += value[at:match.start()].encode("utf-8")
        raw.append(int(match.group(1), 16))
        at = match.end()
    raw += value[at:].encode("utf-8")
    return raw.decode("utf-8", "replace")


def rfc4514_pairs(text: str) -> list[list[tuple[str, str]]]:
    """RDNs of (dotted OID, value) of a name in RFC 4514 (``CN=Root,O=Example``, most
    specific first), most significant first as in the DER; read as leniently as people type
    it: attribute types in any case, long names too, spaces around separators, ``+`` for a
    multi-valued RDN, ``\\,`` and ``\\C3\\A9`` escapes (RFC 4514 2.4)."""
    rdns = []
    for rdn in _split_unescaped(text, ","):
        attrs = []
        for ava in _split_unescaped(rdn, "+"):
            key, sep, value = ava.partition("=")
            oid = _OID_BY_ANY.get(key.strip().lower())
            if oid is None and _DOTTED_OID.match(key.strip()):
                oid = x509.ObjectIdentifier(key.strip())
            if not sep or oid is None:
                raise BadInput(f"cannot read {text[:80]!r} as a distinguished name: "
                               f"{ava.strip()[:40]!r} is not FIELD=value")
            attrs.append((oid.dotted_string, _unescape_4514(value.strip())))
        rdns.append(attrs)
    return rdns[::-1]


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split at ``sep`` where it is not escaped; the escapes stay for ``_unescape_4514``."""
    parts, start, at = [], 0, 0
    while at < len(text):
        if text[at] == "\\":
            at += 2
            continue
        if text[at] == sep:
            parts.append(text[start:at])
            start = at + 1
        at += 1
    parts.append(text[start:])
    return parts


def _unescape_4514(value: str) -> str:
    raw, at = bytearray(), 0
    while at < len(value):
        pair = value[at + 1:at + 3]
        if value[at] == "\\" and len(pair) == 2 and all(c in "0123456789abcdefABCDEF"
                                                         for c in pair):
            raw.append(int(pair, 16))
            at += 3
        elif value[at] == "\\" and at + 1 < len(value):
            raw += value[at + 1].encode("utf-8")
            at += 2
        else:
            raw += value[at].encode("utf-8")
            at += 1
    return raw.decode("utf-8", "replace")


def common_name(name: x509.Name) -> str | None:
    """The commonName (``check_name`` allows at most one)."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[-1].value) if values else None
