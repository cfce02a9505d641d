"""CRLs from outside: validate one before anything is replaced, install it as the current
CRL for its issuer, keep the history, and keep the last good one when a new one is bad.

Per issuer there is at most one current fetched and one current manual CRL. As the guide
has it, an upload replaces the previous manual one, and a fetched CRL overrides the manual
one once it is newer; ``effective`` applies that rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from . import trust
from .encoding import der_element, der_length
from .errors import BadInput, BadSignature, Conflict, NotFound, PolicyViolation
from .models import CrlIssuerStatus, InstalledCrl
from .names import openssl_oneline

ORIGINS = ("fetched", "manual")
HISTORY_KEEP = 30  # replaced CRLs kept per issuer and origin (a big CRL is tens of MB)
MAX_ERROR = 2000

# Extensions a complete CRL may mark critical that we understand (RFC 5280 5.2).
_UNDERSTOOD = {ExtensionOID.CRL_NUMBER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
               ExtensionOID.ISSUING_DISTRIBUTION_POINT, ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
               ExtensionOID.ISSUER_ALTERNATIVE_NAME, ExtensionOID.FRESHEST_CRL}
_ENTRY_UNDERSTOOD = {x509.oid.CRLEntryExtensionOID.CRL_REASON,
                     x509.oid.CRLEntryExtensionOID.INVALIDITY_DATE}


class CrlRejected(PolicyViolation):
    """A CRL that parsed but must not be installed (wrong key, stale, expired, ...)."""


@dataclass(frozen=True)
class CheckedCrl:
    """A CRL that passed validation, with the facts the database keeps."""

    crl: x509.CertificateRevocationList
    der: bytes
    issuer_key: str
    issuer: str
    number: int | None
    this_update: dt.datetime
    next_update: dt.datetime
    entries: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


@dataclass(frozen=True)
class InstallOutcome:
    issuer: str
    action: str  # installed | unchanged
    number: int | None
    row: InstalledCrl


def issuer_label(crl: x509.CertificateRevocationList) -> str:
    return openssl_oneline(crl.issuer)


def _number(crl) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def check_structure(crl: x509.CertificateRevocationList) -> None:
    """Refuse what we cannot apply correctly: delta CRLs, partitioned or indirect CRLs,
    unknown critical extensions."""
    label = issuer_label(crl)
    for ext in _extensions(crl, label):
        if ext.oid == ExtensionOID.DELTA_CRL_INDICATOR:
            raise CrlRejected(f"CRL from {label} is a delta CRL: pkiq installs complete CRLs "
                              "only (Expressway loads no deltas); point the distribution "
                              "point at the full CRL")
        if ext.oid == ExtensionOID.ISSUING_DISTRIBUTION_POINT:
            idp = ext.value
            if idp.indirect_crl:
                raise CrlRejected(f"CRL from {label} is an indirect CRL (entries for other "
                                  "issuers); pkiq does not install indirect CRLs")
            if idp.only_some_reasons or idp.only_contains_user_certs or \
                    idp.only_contains_ca_certs or idp.only_contains_attribute_certs:
                raise CrlRejected(f"CRL from {label} covers only part of the CA's "
                                  "certificates (issuingDistributionPoint scope); installing "
                                  "it would replace the complete CRL")
        if ext.critical and ext.oid not in _UNDERSTOOD:
            raise CrlRejected(f"CRL from {label} has an unknown critical extension "
                              f"{ext.oid.dotted_string}; RFC 5280 says it must not be used")


def _extensions(item, label: str) -> x509.Extensions:
    """pyca parses extensions when they are first read: a malformed one must come out as a
    refusal of this CRL, not as a ValueError that ends the whole refresh."""
    try:
        return item.extensions
    except ValueError as exc:
        raise CrlRejected(f"CRL from {label} has a malformed extension ({exc}), so it cannot "
                          "be checked") from None


_CRITICAL_EXTENSION = b"\x01\x01\xff\x04"  # critical BOOLEAN TRUE, then extnValue


def _check_entry_extensions(crl, der: bytes) -> None:
    """Entry extensions marked critical that we do not know (certificateIssuer above all,
    which would make the CRL indirect). Every critical extension's DER holds the bytes
    01 01 FF 04; when they occur no more often than the CRL's own critical extensions, no
    entry has one, and a million entries need not be walked one by one."""
    crl_level = sum(1 for ext in crl.extensions if ext.critical)
    if der.count(_CRITICAL_EXTENSION) <= crl_level:
        return
    label = issuer_label(crl)
    for entry in crl:
        for ext in _extensions(entry, label):
            if ext.critical and ext.oid not in _ENTRY_UNDERSTOOD:
                raise CrlRejected(f"CRL from {label} has an entry with the "
                                  f"critical extension {ext.oid.dotted_string}, which pkiq "
                                  "does not understand")


def verify_signature(session: Session, crl: x509.CertificateRevocationList,
                     der: bytes | None = None) -> x509.Certificate:
    """The issuer must be in the trusted CA list or be a pkiq CA, and its key must have
    signed this CRL. Returns the issuing CA's certificate. ``der``: the CRL as received,
    whose signed part is then verified as is (see ``_signature_valid``)."""
    label = issuer_label(crl)
    anchors = trust.anchors_for(session, crl.issuer)
    if not anchors:
        raise CrlRejected(f"CRL issuer {label} is not in the trusted CA list nor a pkiq CA; "
                          "add the CA with 'pkiq trust add' first")
    for cert in anchors:
        try:
            valid = _signature_valid(crl, der, cert.public_key())
        except (TypeError, ValueError):
            valid = False  # a key type that cannot have signed it
        if valid:
            _check_crl_sign(cert, label)
            return cert
    raise BadSignature(f"CRL from {label}: the signature does not verify with the key of "
                       f"{'the' if len(anchors) == 1 else 'any'} trusted CA of that name "
                       "(signed by another key, or altered)")


def _signature_valid(crl: x509.CertificateRevocationList, der: bytes | None, key) -> bool:
    """``is_signature_valid`` re-encodes the whole TBSCertList before hashing it: for a
    million entries that is most of the time and tens of MB. The signed bytes are the first
    element of the DER as received, so hash those; other key types take the slow path."""
    if der is None or not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return crl.is_signature_valid(key)
    tbs = _first_element(der)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(crl.signature, tbs, crl.signature_algorithm_parameters,
                       crl.signature_hash_algorithm)
        else:
            key.verify(crl.signature, tbs, crl.signature_algorithm_parameters)
    except InvalidSignature:
        return False
    return True


def _first_element(der: bytes) -> memoryview:
    """The first element inside the outer SEQUENCE (the CRL parsed already)."""
    inner, _length = der_length(der)
    return der_element(der, inner)


def _check_crl_sign(cert: x509.Certificate, label: str) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.crl_sign:
        raise CrlRejected(f"the trusted CA {label} may not sign CRLs (keyUsage lacks cRLSign)")


def check(session: Session, crl: x509.CertificateRevocationList, der: bytes, now: dt.datetime,
          *, skew: dt.timedelta) -> CheckedCrl:
    """Everything that must hold before a CRL may replace the installed one, except the
    comparison with it (``install`` does that under the row lock)."""
    label = issuer_label(crl)
    check_structure(crl)
    verify_signature(session, crl, der)
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if this_update > now + skew:
        raise CrlRejected(f"CRL from {label} has thisUpdate {this_update:%Y-%m-%d %H:%M:%S}Z, "
                          "in the future (check the clocks of the CA and of this host)")
    if next_update is None:
        raise CrlRejected(f"CRL from {label} has no nextUpdate, so nobody can tell when it "
                          "goes stale (RFC 5280 5.1.2.5 requires it)")
    if next_update <= now:
        raise CrlRejected(f"CRL from {label} expired at {next_update:%Y-%m-%d %H:%M:%S}Z "
                          "(nextUpdate passed); the CA has not published a newer one there")
    _check_entry_extensions(crl, der)
    return CheckedCrl(crl=crl, der=der, issuer_key=trust.name_key(crl.issuer), issuer=label,
                      number=_number(crl), this_update=this_update, next_update=next_update,
                      entries=len(crl))


def current(session: Session, issuer_key: str, origin: str, *, for_update: bool = False
            ) -> InstalledCrl | None:
    query = select(InstalledCrl).where(InstalledCrl.issuer_key == issuer_key,
                                       InstalledCrl.origin == origin, InstalledCrl.current)
    return session.scalar(query.with_for_update() if for_update else query)


def _older_than_installed(new: CheckedCrl, old: InstalledCrl) -> str | None:
    """Why ``new`` must not replace ``old``, if it must not."""
    old_number = int(old.number) if old.number is not None else None
    if new.number is not None and old_number is not None:
        if new.number < old_number:
            return (f"CRL number {new.number} is lower than the installed {old_number} "
                    "(a stale copy, or a replay)")
        if new.number == old_number and new.sha256 != old.sha256:
            return (f"CRL number {new.number} is the installed one's, but the content "
                    "differs (the CA reused a CRL number)")
    if new.this_update < old.this_update:
        return (f"thisUpdate {new.this_update:%Y-%m-%d %H:%M:%S}Z is older than the "
                f"installed CRL's {old.this_update:%Y-%m-%d %H:%M:%S}Z")
    return None


def install(session: Session, checked: CheckedCrl, *, origin: str, source: str | None,
            now: dt.datetime) -> InstallOutcome:
    """Make ``checked`` the current CRL of its issuer for ``origin``. A fetched CRL older
    than the installed one is refused; the same CRL again changes nothing."""
    if origin not in ORIGINS:
        raise BadInput(f"unknown CRL origin {origin!r}")
    old = current(session, checked.issuer_key, origin, for_update=True)
    if old is not None:
        if old.sha256 == checked.sha256:
            return InstallOutcome(checked.issuer, "unchanged", checked.number, old)
        if origin == "fetched":
            reason = _older_than_installed(checked, old)
            if reason:
                raise CrlRejected(f"CRL from {checked.issuer}: {reason}; the installed CRL "
                                  "is kept")
        old.current, old.replaced_at = False, now
        session.flush()
        _trim_history(session, checked.issuer_key, origin)
    row = InstalledCrl(issuer_key=checked.issuer_key, issuer=checked.issuer, origin=origin,
                       source=source, number=None if checked.number is None
                       else str(checked.number), this_update=checked.this_update,
                       next_update=checked.next_update, entries=checked.entries,
                       sha256=checked.sha256, der=checked.der, current=True, installed_at=now)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # another process installed one for this issuer in between
        raise Conflict(f"another CRL for {checked.issuer} was installed at the same moment; "
                       "nothing was changed, try again") from None
    return InstallOutcome(checked.issuer, "installed", checked.number, row)


def record_attempt(session: Session, issuer_key: str, issuer: str, now: dt.datetime, *,
                   error: str | None, source: str | None) -> None:
    """Remember the last attempt for an issuer (and why it failed), for status and alerts."""
    status = session.get(CrlIssuerStatus, issuer_key)
    if status is None:
        status = CrlIssuerStatus(issuer_key=issuer_key, issuer=issuer, last_attempt_at=now)
        session.add(status)
        session.flush()  # a second point serving this issuer must find it (get() does not
        # see pending rows); known issuers are written at commit, not one UPDATE per call
    status.issuer, status.last_attempt_at, status.source = issuer, now, source
    status.error = error[:MAX_ERROR] if error else None
    if error is None:
        status.last_success_at = now


def effective(session: Session, issuer_key: str) -> InstalledCrl | None:
    """The CRL in force for an issuer: the fetched one once it is newer than the manual one
    (the guide: automatic updates override manual uploads), else the manual one."""
    return _in_force(current(session, issuer_key, "fetched"),
                     current(session, issuer_key, "manual"))


def _in_force(fetched: InstalledCrl | None, manual: InstalledCrl | None) -> InstalledCrl | None:
    if fetched is None or manual is None:
        return fetched or manual
    return fetched if fetched.this_update > manual.this_update else manual


def upload(session: Session, crl: x509.CertificateRevocationList, der: bytes,
           now: dt.datetime, *, skew: dt.timedelta, source: str | None) -> InstallOutcome:
    """A manual CRL: validated like a fetched one, then it replaces the previous manual CRL
    of that issuer."""
    checked = check(session, crl, der, now, skew=skew)
    outcome = install(session, checked, origin="manual", source=source, now=now)
    record_attempt(session, checked.issuer_key, checked.issuer, now, error=None, source=source)
    return outcome


def remove_manual(session: Session, issuer_ref: str, now: dt.datetime) -> InstalledCrl:
    """Remove the manually uploaded CRL of an issuer (by list id or issuer key prefix)."""
    return remove_current(session, issuer_ref, now, origin="manual")


def remove_current(session: Session, issuer_ref: str, now: dt.datetime, *, origin: str
                   ) -> InstalledCrl:
    """Stop using the current CRL of ``origin`` (kept in the history). For a fetched CRL this
    is the way out when a CA was rebuilt and restarted its CRL numbers: the next refresh
    then installs what the distribution point serves, whatever its number."""
    row = find_current(session, issuer_ref, origin=origin)
    row.current, row.replaced_at = False, now
    session.flush()
    if origin == "fetched":
        trust.forget_validators(session)
    return row


def find_current(session: Session, ref: str, *, origin: str | None = None) -> InstalledCrl:
    """A current CRL by its id, by an issuer key prefix (8+ hex digits) or by exact issuer
    (one-line form)."""
    ref = ref.strip()
    query = select(InstalledCrl).where(InstalledCrl.current)
    if origin:
        query = query.where(InstalledCrl.origin == origin)
    if ref.isdigit() and len(ref) < 8:
        query = query.where(InstalledCrl.id == int(ref))
    elif ref.startswith("/") or "=" in ref:
        query = query.where(InstalledCrl.issuer == ref)
    elif len(ref) >= 8 and re.fullmatch(r"[0-9a-fA-F]+", ref):
        # hex only: an empty or short prefix, or a LIKE wildcard, would pick any issuer
        query = query.where(InstalledCrl.issuer_key.startswith(ref.lower()))
    else:
        raise BadInput(f"{ref!r}: give a CRL id, an issuer key (at least 8 hex digits) or "
                       "the issuer DN (/C=.../CN=...)")
    rows = list(session.scalars(query))
    if not rows:
        raise NotFound(f"no {origin + ' ' if origin else ''}CRL installed for {ref!r}")
    issuers = {r.issuer_key for r in rows}
    if len(issuers) > 1:
        raise BadInput(f"{ref!r} matches CRLs of {len(issuers)} issuers; be more specific")
    return rows[0] if len(rows) == 1 else max(rows, key=lambda r: r.this_update)


def installed(session: Session) -> list[InstalledCrl]:
    """Every issuer's effective CRL, by issuer: one query, without the CRLs themselves (beat
    asks every tick; a big CRL is tens of MB)."""
    by_issuer: dict[str, dict[str, InstalledCrl]] = {}
    for row in session.scalars(select(InstalledCrl).where(InstalledCrl.current)
                               .options(defer(InstalledCrl.der))):
        by_issuer.setdefault(row.issuer_key, {})[row.origin] = row
    rows = [_in_force(pair.get("fetched"), pair.get("manual")) for pair in by_issuer.values()]
    return sorted(rows, key=lambda r: r.issuer)


def history(session: Session, issuer_key: str, limit: int = 50) -> list[InstalledCrl]:
    return list(session.scalars(select(InstalledCrl).where(
        InstalledCrl.issuer_key == issuer_key).order_by(InstalledCrl.id.desc()).limit(limit)))


def _trim_history(session: Session, issuer_key: str, origin: str) -> None:
    old = list(session.scalars(select(InstalledCrl.id).where(
        InstalledCrl.issuer_key == issuer_key, InstalledCrl.origin == origin,
        ~InstalledCrl.current).order_by(InstalledCrl.id.desc()).offset(HISTORY_KEEP)))
    if old:
        session.execute(delete(InstalledCrl).where(InstalledCrl.id.in_(old)))
