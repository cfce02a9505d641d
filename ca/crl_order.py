"""CRLs in one order and one PEM form, shared by the store's files and the bundles: the same
set of CRLs, in any order, always gives the same bytes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from cryptography import x509

from .crl_scope import scope_of
from .names import openssl_oneline


def ordered_crls(ders: Iterable[bytes]
                 ) -> list[tuple[bytes, x509.CertificateRevocationList]]:
    """(DER, parsed) by issuer, then CRL number, then scope, then the DER's own hash: a
    total order, so that the same set in any order gives the same files. A repeat of the
    same DER is dropped."""
    unique = {hashlib.sha256(der).hexdigest(): bytes(der) for der in ders}
    parsed = [(sha, der, x509.load_der_x509_crl(der)) for sha, der in unique.items()]
    parsed.sort(key=lambda item: (openssl_oneline(item[2].issuer), _number_or_minus(item[2]),
                                  scope_of(item[2]).text, item[0]))
    return [(der, crl) for _sha, der, crl in parsed]


def _number_or_minus(crl: x509.CertificateRevocationList) -> int:
    """For sorting: a CRL without a number (a v1 CRL) before any numbered one."""
    number = crl_number(crl)
    return -1 if number is None else number


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def crl_pem(der: bytes) -> bytes:
    """The CRL's own DER in PEM (RFC 7468 section 5: 64-character base64 lines)."""
    text = base64.b64encode(der)
    lines = b"".join(text[i:i + 64] + b"\n" for i in range(0, len(text), 64))
    return b"-----BEGIN X509 CRL-----\n" + lines + b"-----END X509 CRL-----\n"
