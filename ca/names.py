"""Distinguished names in the spellings PKI engineers type and OpenSSL writes."""

from __future__ import annotations

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
    ("name", "name", NameOID.PSEUDONYM),
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
        if oid == NameOID.COUNTRY_NAME and len(value) != 2:
            raise BadInput(f"countryName must be a two-letter ISO 3166 code, not {value!r}")
        attrs.append(x509.NameAttribute(oid, value))
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
    """The ``/C=GB/O=Example/CN=host`` form OpenSSL writes in index.txt."""
    out = []
    for attr in name:
        short = SHORT_BY_OID.get(attr.oid, attr.oid.dotted_string)
        value = str(attr.value).replace("\\", "\\\\").replace("/", "\\/")
        out.append(f"/{short}={value}")
    return "".join(out)


def common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[-1].value) if values else None
