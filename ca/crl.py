"""Building a CA's CRL: a pure function from revocation records to a signed v2 CRL."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

from .errors import BadInput
from .keys import Signer

# RFC 5280 5.3.1 reason codes, by the names OpenSSL writes in index.txt.
REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "CACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "removeFromCRL": x509.ReasonFlags.remove_from_crl,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "AACompromise": x509.ReasonFlags.aa_compromise,
}
_BY_LOWER = {k.lower(): k for k in REASONS}


def reason_name(text: str) -> str:
    """Canonical reason name, accepting any case (``keycompromise`` -> ``keyCompromise``)."""
    name = _BY_LOWER.get(text.strip().lower().replace("_", "").replace("-", ""))
    if name is None:
        raise BadInput(f"unknown revocation reason {text!r}; use one of {', '.join(REASONS)}")
    if name == "removeFromCRL":
        raise BadInput("removeFromCRL belongs in delta CRLs, which pkiq does not issue")
    return name


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: dt.datetime
    reason: str | None = None
    invalidity_date: dt.datetime | None = None


def build_crl(
    *,
    signer: Signer,
    issuer_cert: x509.Certificate,
    entries: list[RevokedEntry],
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> x509.CertificateRevocationList:
    """A v2 CRL with a CRL number (RFC 5280 5.2.3: MUST, and only ever increasing) and an
    authority key identifier (5.2.1) matching the issuer's SKI."""
    if next_update <= this_update:
        raise BadInput("nextUpdate must be after thisUpdate")
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(aki, critical=False)
    )
    for entry in entries:
        revoked = (x509.RevokedCertificateBuilder().serial_number(entry.serial)
                   .revocation_date(entry.revoked_at))
        if entry.reason and entry.reason != "unspecified":
            # 5.3.1: the reason code SHOULD be absent rather than "unspecified".
            revoked = revoked.add_extension(x509.CRLReason(REASONS[entry.reason]), False)
        if entry.invalidity_date is not None:
            revoked = revoked.add_extension(x509.InvalidityDate(entry.invalidity_date), False)
        builder = builder.add_revoked_certificate(revoked.build())
    return signer.sign_crl(builder)
