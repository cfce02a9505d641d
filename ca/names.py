"""Distinguished names in the spellings PKI engineers type and OpenSSL writes."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.x509.oid import NameOID

from .errors import BadInput

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


def checked_attribute(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute:
    """One DN attribute, refused (not warned about) when RFC 5280 or DER would object."""
    check_value(oid, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return x509.NameAttribute(oid, value)
        except (ValueError, UserWarning) as exc:
            raise BadInput(f"{long_name(oid)}: {exc}") from None


def check_value(oid: x509.ObjectIdentifier, value: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in "\u2028\u2029\x85" for c in value):
        raise BadInput(f"{long_name(oid)} contains control characters; refused")
    if oid in _IA5_FIELDS and not value.isascii():
        raise BadInput(f"{long_name(oid)} must be ASCII (an IA5String)")


def check_name(name: x509.Name) -> None:
    """Refuse DNs that would break index.txt or could not be encoded as RFC 5280 asks."""
    for attr in name:
        if isinstance(attr.value, str):
            check_value(attr.oid, attr.value)


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
        oid = field_oid(key)
        value = value.strip()
        if oid == NameOID.COUNTRY_NAME and (len(value) != 2 or not value.isascii()):
            raise BadInput(f"countryName must be a two-letter ISO 3166 code, not {value!r}")
        attrs.append(checked_attribute(oid, value))
    return x509.Name(attrs)


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


def common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[-1].value) if values else None
