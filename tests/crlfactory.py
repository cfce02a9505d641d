"""Test CRLs, fast and correctly signed: an issuer, then a CRL of any size.

pyca's builder takes about ten microseconds per entry, far too slow for a million. So the
builder makes an empty CRL (issuer, dates, extensions, algorithm), the entries are spliced
into its TBSCertList as raw DER, and the result is signed again with the issuer's key.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

T0 = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def issuer(name: str = "CRL Test CA") -> Issuer:
    """A self-signed EC CA, one per name for the whole session (keys are the slow part);
    ``issuer()`` and ``issuer("CRL Test CA")`` are the same CA."""
    return _issuer(name)


@cache
def _issuer(name: str) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(T0 - dt.timedelta(days=1))
            .not_valid_after(T0 + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256()))
    return Issuer(key, cert)


def crl_der(entries: int = 3, *, number: int = 1, ca: Issuer | None = None,
            this_update: dt.datetime = T0, next_update: dt.datetime | None = None,
            first_serial: int = 1000) -> bytes:
    """A signed v2 CRL revoking serials ``first_serial .. first_serial + entries - 1``."""
    ca = ca or issuer()
    empty = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
             .last_update(this_update)
             .next_update(next_update or this_update + dt.timedelta(days=7))
             .add_extension(x509.CRLNumber(number), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 ca.key.public_key()), critical=False)
             .sign(ca.key, hashes.SHA256()))
    if entries == 0:
        return empty.public_bytes(serialization.Encoding.DER)
    tbs = _with_entries(empty.tbs_certlist_bytes, _revoked(entries, first_serial, this_update))
    signature = ca.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    outer = _elements(empty.public_bytes(serialization.Encoding.DER))
    algorithm = outer[1]
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def crl_pem(entries: int = 3, **kwargs) -> bytes:
    return pem(crl_der(entries, **kwargs))


def pem(der: bytes) -> bytes:
    """The PEM form of a DER CRL (RFC 7468: base64 in lines of 64)."""
    text = base64.b64encode(der)
    lines = b"\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN X509 CRL-----\n" + lines + b"\n-----END X509 CRL-----\n"


def _revoked(count: int, first_serial: int, when: dt.datetime) -> bytes:
    """``SEQUENCE OF SEQUENCE { INTEGER serial, UTCTime date }``, serials minimally encoded."""
    date = _tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    body = b"".join(_entry(serial.to_bytes(serial.bit_length() // 8 + 1, "big"), date)
                    for serial in range(first_serial, first_serial + count))
    return _tlv(0x30, body)


def _entry(serial: bytes, date: bytes) -> bytes:
    return b"\x30%c\x02%c%b%b" % (2 + len(serial) + len(date), len(serial), serial, date)


def _with_entries(tbs: bytes, revoked: bytes) -> bytes:
    """Insert revokedCertificates after nextUpdate (RFC 5280 5.1: the sixth field)."""
    fields = _elements(tbs)
    return _tlv(0x30, b"".join(fields[:5]) + revoked + b"".join(fields[5:]))


def _elements(der: bytes) -> list[bytes]:
    """The encoded TLVs inside one SEQUENCE."""
    start, end = _header(der, 0)
    out = []
    while start < end:
        _content, after = _header(der, start)
        out.append(der[start:after])
        start = after
    return out


def _header(der: bytes, at: int) -> tuple[int, int]:
    """(start of content, end of element) for the TLV at ``at``."""
    length = der[at + 1]
    start = at + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(der[start:start + size], "big")
        start += size
    return start, start + length


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content
