"""OpenSSL's subject-name hash: the ``<hash>`` of a ``-CApath`` folder's ``<hash>.0`` and
``<hash>.r0`` file names, which ``openssl x509 -hash``, ``openssl crl -hash`` and
``openssl rehash`` print.

OpenSSL (crypto/x509/x_name.c, x509_name_canon and asn1_string_canon; X509_NAME_hash_ex in
x509_cmp.c) hashes a canonical form of the name, not its DER, so that a certificate and a
CRL naming the same issuer in different string types or case land under one hash:

* every value of a text type (UTF8String, BMPString, UniversalString, PrintableString,
  T61String, IA5String, VisibleString) becomes a UTF8String, its ASCII white space trimmed
  at both ends and each inner run collapsed to one space, ASCII letters lower-cased (bytes
  outside ASCII are copied as they are); any other type is kept as encoded;
* each RDN is DER-encoded as a SET OF its (OID, value) pairs, sorted as DER sorts a SET OF;
* the RDNs are concatenated *without* the Name's outer SEQUENCE header;
* the hash is the first four bytes of SHA-1 over that, read little-endian, in 8 hex digits.

An empty name hashes the empty string.
"""

from __future__ import annotations

import hashlib

from cryptography import x509

from .encoding import der_length
from .errors import BadInput

_SEQUENCE, _SET, _OID, _UTF8 = 0x30, 0x31, 0x06, 0x0C
# The types OpenSSL canonicalises (ASN1_MASK_CANON) and how ASN1_STRING_to_UTF8 reads them:
# one byte per character (PrintableString, T61String, IA5String, VisibleString: Latin-1),
# UTF-16BE for BMPString, UCS-4 for UniversalString, UTF8String as it is.
_TEXT_TYPES = {0x0C: "utf-8", 0x13: "latin-1", 0x14: "latin-1", 0x16: "latin-1",
               0x1A: "latin-1", 0x1C: "utf-32-be", 0x1E: "utf-16-be"}


def subject_hash(name: x509.Name) -> str:
    """``openssl x509 -hash`` of a certificate whose subject is ``name`` (``openssl crl
    -hash`` of a CRL whose issuer it is): 8 lowercase hex digits."""
    digest = hashlib.sha1(canonical_encoding(name)).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


def canonical_encoding(name: x509.Name) -> bytes:
    """The bytes OpenSSL hashes for ``name`` (see the module's docstring)."""
    der = name.public_bytes()
    rdns = _children(der, 0, _SEQUENCE, "Name")
    out = []
    for rdn_start in rdns:
        entries = sorted(_canonical_entry(der, at)
                         for at in _children(der, rdn_start, _SET, "RDN"))
        out.append(_tlv(_SET, b"".join(entries)))
    return b"".join(out)


def _canonical_entry(der: bytes, at: int) -> bytes:
    oid_at, value_at = _children(der, at, _SEQUENCE, "AttributeTypeAndValue", count=2)
    if der[oid_at] != _OID:
        raise BadInput("a name attribute whose type is not an OID")
    return _tlv(_SEQUENCE, _element(der, oid_at) + _canonical_value(der, value_at))


def _canonical_value(der: bytes, at: int) -> bytes:
    tag = der[at]
    codec = _TEXT_TYPES.get(tag)
    if codec is None:
        return _element(der, at)  # not a text type: kept as encoded
    start, length = der_length(der, at)
    try:
        text = der[start:start + length].decode(codec)
    except UnicodeDecodeError:
        raise BadInput(f"a name attribute whose string (tag {tag:#04x}) is not valid "
                       f"{codec}") from None
    return _tlv(_UTF8, _canonical_text(text.encode("utf-8")))


def _canonical_text(value: bytes) -> bytes:
    """asn1_string_canon on UTF-8 bytes: ``bytes.isspace``/``lower`` act on ASCII only, as
    OpenSSL's ossl_isspace/ossl_tolower do (space, \\t, \\n, \\v, \\f, \\r)."""
    out = bytearray()
    pending_space = False
    for byte in value.strip(b" \t\n\v\f\r"):
        if bytes((byte,)).isspace():
            pending_space = True
            continue
        if pending_space:
            out.append(0x20)
            pending_space = False
        out.append(byte + 0x20 if 0x41 <= byte <= 0x5A else byte)
    return bytes(out)


def _children(der: bytes, at: int, tag: int, what: str, count: int | None = None
              ) -> list[int]:
    """Where each element inside the constructed element at ``at`` starts."""
    if der[at] != tag:
        raise BadInput(f"a {what} that is not tagged {tag:#04x}")
    start, length = der_length(der, at)
    end = start + length
    starts = []
    while start < end:
        starts.append(start)
        inner_start, inner_length = der_length(der, start)
        start = inner_start + inner_length
    if start != end or (count is not None and len(starts) != count):
        raise BadInput(f"a malformed {what} in a name")
    return starts


def _element(der: bytes, at: int) -> bytes:
    start, length = der_length(der, at)
    return der[at:start + length]


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + content
