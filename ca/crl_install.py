"""CRLs from outside: validate one before anything is replaced, install it as the current
CRL for its issuer and scope, keep the history, and keep the last good one when a new one is
bad.

Per issuer and scope (``ca.crl_scope``: the CRL's issuingDistributionPoint, absent =
complete) there is at most one current fetched and one current manual CRL; a CRL replaces
only the one of its own scope, and the CRL-number and freshness rules compare it with that
one only. As the guide has it, an upload replaces the previous manual one, and a fetched CRL
overrides the manual one once it is newer; ``effective`` applies that rule per scope.
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
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import trust
from .crl_scope import COMPLETE, COMPLETE_SCOPE, Scope, scope_of
from .encoding import der_element, der_length
from .errors import BadInput, BadSignature, Conflict, NotFound, PolicyViolation
from .models import CrlIssuerStatus, InstalledCrl, InstalledCrlChunk
from .names import openssl_oneline

ORIGINS = ("fetched", "manual")
HISTORY_KEEP = 30  # replaced CRLs kept per issuer, scope and origin (a big CRL: tens of MB)
MAX_ERROR = 2000
CHUNK = 1 << 20  # bytes of DER per stored chunk: what one statement binds at most

# Extensions a complete CRL may mark critical that we understand (RFC 5280 5.2).
_UNDERSTOOD = {ExtensionOID.CRL_NUMBER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
               ExtensionOID.ISSUING_DISTRIBUTION_POINT, ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
               ExtensionOID.ISSUER_ALTERNATIVE_NAME, ExtensionOID.FRESHEST_CRL}
_ENTRY_UNDERSTOOD = {x509.oid.CRLEntryExtensionOID.CRL_REASON,
                     x509.oid.CRLEntryExtensionOID.INVALIDITY_DATE}


class CrlRejected(PolicyViolation):
    """A CRL that parsed but must not be installed (wrong key, stale, expired, ...)."""


class OlderThanInstalled(CrlRejected):
    """A valid CRL older than the one installed for its scope: a lagging mirror or a replay.
    Nothing is wrong with the issuer, whose newer CRL is in force."""


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
    scope: Scope = COMPLETE_SCOPE

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def label(self) -> str:
        return scoped_label(self.issuer, self.scope.text)


@dataclass(frozen=True)
class InstallOutcome:
    issuer: str
    action: str  # installed | unchanged
    number: int | None
    row: InstalledCrl


def issuer_label(crl: x509.CertificateRevocationList) -> str:
    return openssl_oneline(crl.issuer)


def scoped_label(issuer: str, scope: str) -> str:
    """The issuer, and its scope where that is not the complete one, cut short for a
    message (``crl status`` shows the whole scope)."""
    if scope == COMPLETE:
        return issuer
    return f"{issuer} (scope {scope if len(scope) <= 72 else scope[:69] + '...'})"


def _number(crl) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def check_structure(crl: x509.CertificateRevocationList) -> None:
    """Refuse what cannot be represented as one issuer's CRL of one scope: delta CRLs (they
    only make sense merged with their base), indirect CRLs (entries for other issuers),
    attribute-certificate CRLs, unknown critical extensions. A partitioned CRL (by
    distribution point, user or CA certificates, reasons) is a scope of its own."""
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
            if idp.only_contains_attribute_certs:
                raise CrlRejected(f"CRL from {label} lists attribute certificates only "
                                  "(issuingDistributionPoint onlyContainsAttributeCerts, which "
                                  "RFC 5280 5.2.5 forbids), so it revokes no certificate pkiq "
                                  "or an Expressway checks")
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
                     der: bytes | None = None, *, now: dt.datetime) -> x509.Certificate:
    """The issuer must be in the trusted CA list or be a pkiq CA, its key must have signed
    this CRL, and its certificate must not have expired (RFC 5280 6.3.3 (f): the CRL
    issuer's certificate is validated like any other, now). Returns the issuing CA's
    certificate. ``der``: the CRL as received, whose signed part is then verified as is
    (see ``_signature_valid``)."""
    label = issuer_label(crl)
    anchors = trust.anchors_for(session, crl.issuer)
    if not anchors:
        raise CrlRejected(f"CRL issuer {label} is not in the trusted CA list nor a pkiq CA; "
                          "add the CA with 'pkiq trust add' first")
    # Latest notAfter first: a CA renewed with the same key verifies with both certificates,
    # and the one still valid decides; the first that verifies is the newest that can.
    for cert in sorted(anchors, key=lambda c: c.not_valid_after_utc, reverse=True):
        try:
            valid = _signature_valid(crl, der, cert.public_key())
        except (TypeError, ValueError):
            valid = False  # a key type that cannot have signed it
        if valid:
            if cert.not_valid_after_utc <= now:
                raise CrlRejected(
                    f"CRL from {label} is signed by a CA certificate that expired on "
                    f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z, and RFC 5280 6.3.3 takes "
                    "CRLs only from an issuer valid now; add the CA's renewed certificate "
                    "with 'pkiq trust add'")
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
    """Everything that must hold before a CRL may replace the installed one of its scope,
    except the comparison with it (``install`` does that under the row lock)."""
    check_structure(crl)
    scope = scope_of(crl)
    label = scoped_label(issuer_label(crl), scope.text)
    verify_signature(session, crl, der, now=now)
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
    return CheckedCrl(crl=crl, der=der, issuer_key=trust.name_key(crl.issuer),
                      issuer=issuer_label(crl), number=_number(crl), this_update=this_update,
                      next_update=next_update, entries=len(crl), scope=scope)


def current(session: Session, issuer_key: str, origin: str,
            scope_key: str = COMPLETE_SCOPE.key, *, for_update: bool = False
            ) -> InstalledCrl | None:
    """The current CRL of one issuer, scope and origin."""
    query = select(InstalledCrl).where(InstalledCrl.issuer_key == issuer_key,
                                       InstalledCrl.scope_key == scope_key,
                                       InstalledCrl.origin == origin, InstalledCrl.current)
    return session.scalar(query.with_for_update() if for_update else query)


def _older_than_installed(new: CheckedCrl, old: InstalledCrl) -> str | None:
    """Why ``new`` must not replace ``old`` (same issuer and scope), if it must not."""
    old_number = int(old.number) if old.number is not None else None
    if new.number is None and old_number is not None:
        return (f"it has no CRL number (RFC 5280 5.2.3 requires one) and the installed CRL "
                f"has number {old_number}, so it cannot be shown to be newer")
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
            now: dt.datetime, force: bool = False) -> InstallOutcome:
    """Make ``checked`` the current CRL of its issuer and scope for ``origin``. A CRL older
    than the installed one of its scope is refused (a manual one unless ``force``, which is
    recorded on the row); the same CRL again changes nothing."""
    if origin not in ORIGINS:
        raise BadInput(f"unknown CRL origin {origin!r}")
    scope_key = checked.scope.key
    old = current(session, checked.issuer_key, origin, scope_key, for_update=True)
    if old is not None and old.sha256 == checked.sha256:
        return InstallOutcome(checked.issuer, "unchanged", checked.number, old)
    note = None
    if origin == "fetched":
        reason = old is not None and _older_than_installed(checked, old)
        if reason:
            raise OlderThanInstalled(f"CRL from {checked.label}: {reason}; the installed CRL "
                                     "is kept")
    else:
        note = _manual_override(session, checked, old, force)
    if old is not None:
        old.current, old.replaced_at = False, now
        session.flush()
        _trim_history(session, checked.issuer_key, scope_key, origin)
    row = InstalledCrl(issuer_key=checked.issuer_key, issuer=checked.issuer,
                       scope=checked.scope.text, scope_key=scope_key, origin=origin,
                       source=source, number=None if checked.number is None
                       else str(checked.number), this_update=checked.this_update,
                       next_update=checked.next_update, entries=checked.entries,
                       sha256=checked.sha256, current=True, installed_at=now, note=note)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # another process installed one for this issuer in between
        raise Conflict(f"another CRL for {checked.issuer} was installed at the same moment; "
                       "nothing was changed, try again") from None
    _store_der(session, row.id, checked.der)
    return InstallOutcome(checked.issuer, "installed", checked.number, row)


def _store_der(session: Session, crl_id: int, der: bytes) -> None:
    """One chunk per statement, each a view into ``der``: bound whole, a million-entry CRL
    was copied once by the driver and once more into SQLite's row record (issue 10's goal
    allows the DER and 100 MB)."""
    conn, table, view = session.connection(), InstalledCrlChunk.__table__, memoryview(der)
    for seq, start in enumerate(range(0, len(der), CHUNK)):
        conn.execute(table.insert(), {"crl_id": crl_id, "seq": seq,
                                      "data": view[start:start + CHUNK]})


def stored_der(session: Session, row: InstalledCrl) -> bytes:
    """The DER of an installed CRL, as it was received."""
    return b"".join(session.scalars(select(InstalledCrlChunk.data).where(
        InstalledCrlChunk.crl_id == row.id).order_by(InstalledCrlChunk.seq)))


def _manual_override(session: Session, checked: CheckedCrl, manual: InstalledCrl | None,
                     force: bool) -> str | None:
    """An upload older than a CRL installed for its scope (manual or fetched; by number,
    else by thisUpdate) would roll revocations back without a word: refused, unless
    ``force``, and then the returned note says what was overridden."""
    fetched = current(session, checked.issuer_key, "fetched", checked.scope.key)
    for old in (manual, fetched):
        reason = old is not None and old.sha256 != checked.sha256 and \
            _older_than_installed(checked, old)
        if not reason:
            continue
        if not force:
            raise CrlRejected(f"CRL from {checked.label}: {reason}; the installed {old.origin} "
                              "CRL is kept (upload with --force to install this one all the "
                              "same)")
        return (f"uploaded with --force over {old.origin} CRL {old.number or '(no number)'}: "
                f"{reason}")
    return None


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


def effective(session: Session, issuer_key: str, scope_key: str = COMPLETE_SCOPE.key
              ) -> InstalledCrl | None:
    """The CRL in force for an issuer and scope: the fetched one once it is newer than the
    manual one (the guide: automatic updates override manual uploads), else the manual
    one."""
    return _in_force(current(session, issuer_key, "fetched", scope_key),
                     current(session, issuer_key, "manual", scope_key))


def _in_force(fetched: InstalledCrl | None, manual: InstalledCrl | None) -> InstalledCrl | None:
    if fetched is None or manual is None:
        return fetched or manual
    return fetched if fetched.this_update > manual.this_update else manual


def upload(session: Session, crl: x509.CertificateRevocationList, der: bytes,
           now: dt.datetime, *, skew: dt.timedelta, source: str | None, force: bool = False
           ) -> InstallOutcome:
    """A manual CRL: validated like a fetched one, then it replaces the previous manual CRL
    of that issuer and scope (one older than the installed CRL only with ``force``)."""
    checked = check(session, crl, der, now, skew=skew)
    outcome = install(session, checked, origin="manual", source=source, now=now, force=force)
    record_attempt(session, checked.issuer_key, checked.issuer, now, error=None, source=source)
    return outcome


def remove_manual(session: Session, issuer_ref: str, now: dt.datetime, *,
                  scope: str | None = None) -> InstalledCrl:
    """Remove the manually uploaded CRL of an issuer (see ``current_crls`` for the ref)."""
    return remove_current(session, issuer_ref, now, origin="manual", scope=scope)


def remove_current(session: Session, issuer_ref: str, now: dt.datetime, *, origin: str,
                   scope: str | None = None) -> InstalledCrl:
    """Stop using the current CRL of ``origin`` (kept in the history), of the issuer's only
    scope or the one named. For a fetched CRL this is the way out when a CA was rebuilt and
    restarted its CRL numbers, or stopped publishing a scope: the next refresh then installs
    what the distribution point serves, whatever its number."""
    row = find_current(session, issuer_ref, origin=origin, scope=scope)
    row.current, row.replaced_at = False, now
    session.flush()
    if origin == "fetched":
        trust.forget_validators(session)
    return row


def current_crls(session: Session, ref: str, *, origin: str | None = None,
                 scope: str | None = None) -> list[InstalledCrl]:
    """The current CRLs of one issuer, every scope and origin (or those asked), found by CRL
    id, by issuer key prefix (8+ hex digits) or by issuer name, compared as installation
    compares it (``trust.text_name_key``: RFC 5280 7.1, case and spacing aside)."""
    query = select(InstalledCrl).where(InstalledCrl.current, _named(ref))
    if origin:
        query = query.where(InstalledCrl.origin == origin)
    rows = _one_issuer(list(session.scalars(query.order_by(InstalledCrl.id))), ref, origin)
    if scope is not None:
        wanted = scope.strip()
        scoped = [r for r in rows if r.scope == wanted]
        if not scoped:
            raise NotFound(f"no {origin + ' ' if origin else ''}CRL of scope {wanted[:120]!r} "
                           f"installed for {rows[0].issuer}; its scopes: "
                           f"{_scope_list(rows)}")
        rows = scoped
    return rows


def _named(ref: str):
    """The rows ``ref`` names: a CRL id, an issuer key prefix, or the issuer's name."""
    ref = ref.strip()
    if ref.isdigit() and len(ref) < 8:
        return InstalledCrl.id == int(ref)
    if ref.startswith("/") or "=" in ref:
        return or_(InstalledCrl.issuer_key == trust.text_name_key(ref),
                   InstalledCrl.issuer == ref)
    if len(ref) >= 8 and re.fullmatch(r"[0-9a-fA-F]+", ref):
        # hex only: an empty or short prefix, or a LIKE wildcard, would pick any issuer
        return InstalledCrl.issuer_key.startswith(ref.lower())
    raise BadInput(f"{ref!r}: give a CRL id, an issuer key (at least 8 hex digits) or "
                   "the issuer DN (/C=.../CN=...)")


def _one_issuer(rows: list[InstalledCrl], ref: str, origin: str | None
                ) -> list[InstalledCrl]:
    ref = ref.strip()
    if not rows:
        raise NotFound(f"no {origin + ' ' if origin else ''}CRL installed for {ref!r}")
    issuers = {r.issuer_key for r in rows}
    if len(issuers) > 1:
        raise BadInput(f"{ref!r} matches CRLs of {len(issuers)} issuers; be more specific")
    return rows


def find_current(session: Session, ref: str, *, origin: str | None = None,
                 scope: str | None = None) -> InstalledCrl:
    """The one current CRL ``ref`` names (``current_crls``): of the issuer's only scope or
    the one asked; of both origins, the one in force. An issuer with several scopes needs
    the scope named (or the CRL's id)."""
    return _one_scope(in_force(session, ref, origin=origin, scope=scope))


def in_force(session: Session, ref: str, *, origin: str | None = None,
             scope: str | None = None) -> list[InstalledCrl]:
    """The CRL in force for each scope of the issuer ``ref`` names, complete scope first."""
    by_scope: dict[str, dict[str, InstalledCrl]] = {}
    for row in current_crls(session, ref, origin=origin, scope=scope):
        by_scope.setdefault(row.scope_key, {})[row.origin] = row
    rows = [_in_force(pair.get("fetched"), pair.get("manual")) for pair in by_scope.values()]
    return sorted(rows, key=_scope_order)


def _one_scope(rows: list[InstalledCrl]) -> InstalledCrl:
    if len(rows) > 1:
        raise BadInput(f"{rows[0].issuer} has CRLs of {len(rows)} scopes ({_scope_list(rows)}); "
                       "name one with --scope, or give the CRL id")
    return rows[0]


def _scope_list(rows: list[InstalledCrl]) -> str:
    scopes = dict.fromkeys(r.scope for r in sorted(rows, key=_scope_order))
    return ", ".join(s if len(s) <= 100 else s[:97] + "..." for s in scopes)


def _scope_order(row: InstalledCrl) -> tuple:
    return row.issuer, row.scope != COMPLETE, row.scope


def installed(session: Session) -> list[InstalledCrl]:
    """The CRL in force for every issuer and scope: one query, without the CRLs themselves
    (beat asks every tick; a big CRL is tens of MB)."""
    by_scope: dict[tuple[str, str], dict[str, InstalledCrl]] = {}
    for row in session.scalars(select(InstalledCrl).where(InstalledCrl.current)):
        by_scope.setdefault((row.issuer_key, row.scope_key), {})[row.origin] = row
    rows = [_in_force(pair.get("fetched"), pair.get("manual")) for pair in by_scope.values()]
    return sorted(rows, key=_scope_order)


def history(session: Session, issuer_key: str, limit: int = 50) -> list[InstalledCrl]:
    """Every scope and origin, newest first."""
    return list(session.scalars(select(InstalledCrl).where(
        InstalledCrl.issuer_key == issuer_key).order_by(InstalledCrl.id.desc()).limit(limit)))


def history_of(session: Session, ref: str, limit: int = 50) -> list[InstalledCrl]:
    """``history`` of the issuer ``ref`` names (as ``current_crls``), current or not."""
    keys = list(session.scalars(select(InstalledCrl.issuer_key).where(_named(ref))
                                .distinct().limit(2)))
    if not keys:
        raise NotFound(f"no CRL was ever installed for {ref.strip()!r}")
    if len(keys) > 1:
        raise BadInput(f"{ref.strip()!r} matches CRLs of several issuers; be more specific")
    return history(session, keys[0], limit)


def _trim_history(session: Session, issuer_key: str, scope_key: str, origin: str) -> None:
    old = list(session.scalars(select(InstalledCrl.id).where(
        InstalledCrl.issuer_key == issuer_key, InstalledCrl.scope_key == scope_key,
        InstalledCrl.origin == origin, ~InstalledCrl.current)
        .order_by(InstalledCrl.id.desc()).offset(HISTORY_KEEP)))
    if old:
        session.execute(delete(InstalledCrlChunk).where(InstalledCrlChunk.crl_id.in_(old)))
        session.execute(delete(InstalledCrl).where(InstalledCrl.id.in_(old)))
