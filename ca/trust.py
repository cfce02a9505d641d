"""The trusted CA list: the anchors fetched CRLs are validated against, and what the stores
publish to each Expressway as its trusted CA list.

The operations are the guide's: append a PEM bundle, delete chosen entries, reset to the
default (pkiq's own CAs), show all or one, decoded or PEM.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .encoding import (
    EncodingError,
    PemBlock,
    TooManyPemBlocks,
    der_element,
    pem_blocks,
    pem_label,
)
from .errors import BadInput, NotFound
from .models import CertificateAuthority, CrlIssuerStatus, DistributionPoint, TrustedCa
from .names import oneline_pairs, openssl_oneline, rfc4514_pairs

MAX_BUNDLE_CERTS = 1000
_PEM_LABELS = ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE")


@dataclass
class AddResult:
    added: list[TrustedCa] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # fingerprints already in the list
    warnings: list[str] = field(default_factory=list)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def name_key(name: x509.Name) -> str:
    """How a CRL's issuer finds its CA. RFC 5280 7.1 compares names after normalising case
    and white space and whatever the string type (a CRL may encode its issuer as UTF8String
    where the certificate has PrintableString); so the key hashes each RDN's attributes,
    value case-folded and spaces collapsed, not the DER. The signature decides among CAs
    that share a name."""
    return _key([[(a.oid.dotted_string, str(a.value)) for a in rdn] for rdn in name.rdns])


def text_name_key(text: str) -> str:
    """``name_key`` of a name typed by hand, as ``pkiq crl status`` prints it
    (``/O=Example/CN=Root``, ``\\xHH`` for bytes outside ASCII) or in RFC 4514
    (``CN=Root,O=Example``): ``crl show`` and ``crl remove`` then find an issuer whatever the
    case and spacing, by the same comparison installation used."""
    text = text.strip()
    if text.startswith("/"):
        return _key([[pair] for pair in oneline_pairs(text)])
    return _key(rfc4514_pairs(text))


def _key(rdns: list[list[tuple[str, str]]]) -> str:
    """The one normalisation of RFC 5280 7.1 / RFC 4518 pkiq applies: per attribute, white
    space collapsed and case folded; attributes of an RDN as a set."""
    parts = ["+".join(sorted(f"{oid}={' '.join(value.split()).casefold()}"
                             for oid, value in rdn)) for rdn in rdns]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_bundle(data: bytes) -> list[x509.Certificate]:
    """Certificates from a PEM bundle (text around the blocks ignored) or one DER cert."""
    if pem_label(data) is None:
        if data[:1] == b"\x30":
            try:
                cert = x509.load_der_x509_certificate(data)
                cert.extensions  # noqa: B018 - parsed lazily: a malformed one fails here
                return [cert]
            except ValueError as exc:
                raise BadInput(f"not a certificate: malformed DER ({exc})") from None
        raise BadInput("no certificate found: expected PEM blocks "
                       "'-----BEGIN CERTIFICATE-----' or one DER certificate")
    certs = []
    try:
        for number, block in enumerate(pem_blocks(data, _PEM_LABELS,
                                                  max_blocks=MAX_BUNDLE_CERTS), 1):
            try:
                cert = x509.load_der_x509_certificate(_certificate_der(block))
                cert.extensions  # noqa: B018 - parsed lazily: a malformed one fails here
            except (ValueError, EncodingError) as exc:
                raise BadInput(f"certificate #{number} of the bundle is malformed ({exc}); "
                               "nothing was added") from None
            certs.append(cert)
    except TooManyPemBlocks:
        raise BadInput(f"the bundle holds more than {MAX_BUNDLE_CERTS} certificates; at most "
                       f"{MAX_BUNDLE_CERTS} are accepted at once") from None
    if not certs:
        raise BadInput("no certificate found: expected PEM blocks "
                       "'-----BEGIN CERTIFICATE-----' or one DER certificate")
    return certs


def _certificate_der(block: PemBlock) -> bytes:
    """OpenSSL's TRUSTED CERTIFICATE (``openssl x509 -trustout``) is the certificate
    followed by its trust settings (X509_AUX): keep the first DER element only."""
    if block.label == "TRUSTED CERTIFICATE":
        return bytes(der_element(block.der))
    return block.der


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return cert.version == x509.Version.v1  # old v1 roots carry no extensions at all


def _row(cert: x509.Certificate, origin: str, now: dt.datetime) -> TrustedCa:
    return TrustedCa(sha256=fingerprint(cert), subject=openssl_oneline(cert.subject),
                     issuer=openssl_oneline(cert.issuer), subject_key=name_key(cert.subject),
                     not_after=cert.not_valid_after_utc,
                     der=cert.public_bytes(serialization.Encoding.DER), origin=origin,
                     added_at=now)


def add(session: Session, data: bytes, now: dt.datetime, *, origin: str = "uploaded"
        ) -> AddResult:
    """Append a bundle. Duplicates (by fingerprint) are ignored; a certificate that is not a
    CA is refused, since it cannot anchor a chain or sign a CRL."""
    certs = load_bundle(data)
    for cert in certs:
        if not is_ca(cert):
            raise BadInput(f"{openssl_oneline(cert.subject)} is not a CA certificate "
                           "(basicConstraints CA:FALSE or missing) and the trusted CA list "
                           "holds CAs only, so nothing was added")
    result = AddResult()
    known = {row.sha256 for row in session.scalars(select(TrustedCa))}
    for cert in certs:
        fp = fingerprint(cert)
        if fp in known:
            result.duplicates.append(fp)
            continue
        known.add(fp)
        row = _row(cert, origin, now)
        session.add(row)
        result.added.append(row)
    session.flush()
    forget_validators(session)
    result.warnings = list_warnings(session, now)
    return result


def list_entries(session: Session) -> list[TrustedCa]:
    return list(session.scalars(select(TrustedCa).order_by(TrustedCa.subject, TrustedCa.id)))


def find(session: Session, ref: str) -> TrustedCa:
    """An entry by fingerprint (or an unambiguous prefix of at least 8 hex digits, colons
    allowed) or by list id."""
    ref = ref.strip().lower().replace(":", "")
    if ref.isdigit() and len(ref) < 8:
        row = session.get(TrustedCa, int(ref))
    else:
        if len(ref) < 8 or not re.fullmatch(r"[0-9a-f]+", ref):
            raise BadInput(f"{ref!r}: give a list id or a SHA-256 fingerprint "
                           "(at least 8 hex digits)")
        rows = list(session.scalars(select(TrustedCa).where(TrustedCa.sha256.startswith(ref))))
        if len(rows) > 1:
            raise BadInput(f"fingerprint prefix {ref} matches {len(rows)} entries; give more "
                           "digits")
        row = rows[0] if rows else None
    if row is None:
        raise NotFound(f"no trusted CA {ref} in the list")
    return row


def remove(session: Session, refs: list[str], now: dt.datetime) -> tuple[list[TrustedCa],
                                                                            list[str]]:
    """Delete chosen entries (all found first, so a typo deletes nothing)."""
    rows = list({row.id: row for row in (find(session, ref) for ref in refs)}.values())
    for row in rows:
        session.delete(row)
    # CRLs of an issuer no longer trusted are no longer wanted: drop its status and errors.
    session.execute(delete(CrlIssuerStatus).where(
        CrlIssuerStatus.issuer_key.in_([row.subject_key for row in rows])))
    session.flush()
    forget_validators(session)
    return rows, list_warnings(session, now)


def reset(session: Session, now: dt.datetime) -> list[TrustedCa]:
    """Back to the default: pkiq's own CAs and nothing else."""
    session.execute(delete(TrustedCa))
    rows = []
    for ca in session.scalars(select(CertificateAuthority).order_by(CertificateAuthority.id)):
        row = _row(x509.load_der_x509_certificate(ca.cert_der), "default", now)
        session.add(row)
        rows.append(row)
    session.flush()
    forget_validators(session)
    return rows


def forget_validators(session: Session) -> None:
    """Make the next refresh a plain GET everywhere: once the trusted list has changed (or a
    fetched CRL was forgotten), a 304 could keep out a CRL that may now be installed."""
    session.execute(update(DistributionPoint).values(etag=None, last_modified=None))


def list_warnings(session: Session, now: dt.datetime) -> list[str]:
    """What the guide warns about: two CAs sharing a CN (Expressway tells them apart badly),
    an intermediate whose issuer is not in the list (no full chain of trust), expired CAs."""
    rows = list_entries(session)
    by_key = {row.subject_key for row in rows}
    warnings, seen_cn = [], {}
    for row in rows:
        cert = x509.load_der_x509_certificate(row.der)
        cns = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        for cn in cns:
            if cn in seen_cn and seen_cn[cn] != row.sha256:
                warnings.append(f"two trusted CAs share the CN {cn!r}: certificates from one "
                                "may be checked against the other; give each CA a unique CN")
            seen_cn.setdefault(cn, row.sha256)
        if cert.issuer != cert.subject and name_key(cert.issuer) not in by_key:
            warnings.append(f"{row.subject} is issued by {row.issuer}, which is not in the "
                            "list: no full chain of trust; add the issuing CA")
        if row.not_after <= now:
            warnings.append(f"{row.subject} expired on {row.not_after:%Y-%m-%d %H:%M}Z: "
                            "CRLs it signs are refused (RFC 5280 6.3.3), so the CRLs "
                            "installed for it are no longer replaced and will lapse; add its "
                            "renewed certificate")
    return warnings


def anchors_for(session: Session, issuer: x509.Name) -> list[x509.Certificate]:
    """Every trusted CA and pkiq CA whose subject is this CRL issuer (a CA re-keyed under the
    same name yields several; the signature decides)."""
    key = name_key(issuer)
    ders = list(session.scalars(select(TrustedCa.der).where(TrustedCa.subject_key == key)))
    certs = [x509.load_der_x509_certificate(der) for der in ders]
    for ca in session.scalars(select(CertificateAuthority)):
        cert = x509.load_der_x509_certificate(ca.cert_der)
        if name_key(cert.subject) == key and all(cert != known for known in certs):
            certs.append(cert)
    return certs


def trusted_pem(session: Session) -> bytes:
    """The list as one PEM bundle (for HTTPS verification and for publishing)."""
    return b"".join(x509.load_der_x509_certificate(row.der).public_bytes(
        serialization.Encoding.PEM) for row in list_entries(session))


def cdp_urls(session: Session) -> list[str]:
    """CRL distribution point URLs named in the trusted CA certificates (HTTP(S) only)."""
    return list(cdp_sources(session))


def cdp_sources(session: Session) -> dict[str, list[str]]:
    """Each HTTP(S) CRL distribution point URL the trusted CA certificates name, with the
    issuers whose CRL it must serve: the CDP in a certificate points at the CRL of that
    certificate's issuer (name keys), so a point found this way knows its issuer before its
    first fetch."""
    sources: dict[str, list[str]] = {}
    for row in list_entries(session):
        cert = x509.load_der_x509_certificate(row.der)
        try:
            points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except x509.ExtensionNotFound:
            continue
        issuer = name_key(cert.issuer)
        for point in points:
            if point.crl_issuer:  # an indirect CRL's issuer: pkiq refuses those anyway
                continue
            for name in point.full_name or []:
                if isinstance(name, x509.UniformResourceIdentifier) and \
                        name.value.lower().startswith(("http://", "https://")):
                    keys = sources.setdefault(name.value, [])
                    if issuer not in keys:
                        keys.append(issuer)
    return sources
