"""Certificate authorities: create, configure, sign, revoke, CRLs, look-ups, and handing a
demoCA over to and from ``openssl ca``. Passphrases arrive as bytes: where they come from
(a file, a variable) is the front end's business, never an argument a shell would show."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ca import authority
from ca.errors import BadInput, NotFound, PkiqError
from ca.issuance import CaUrls
from ca.keys import check_passphrase
from ca.names import parse_name
from ca.openssl_io import adopt, read_democa, render_democa
from ca.pkcs8 import protection
from ca.policy import Policy
from ca.profiles import PROFILES
from ca.x509text import Decoded, describe
from shell.files import write_tree

from .context import ServiceContext

STATUS_WORDS = {"V": "valid", "R": "revoked", "E": "expired"}


@dataclass(frozen=True)
class CaChanges:
    """The ``[ CA_default ]`` settings a caller wants changed; None leaves one as it is."""

    policy: str | None = None
    preserve_dn: bool | None = None
    copy_extensions: str | None = None
    unique_subject: bool | None = None
    default_days: int | None = None
    profile_days: tuple[str, ...] = ()  # PROFILE=DAYS
    crl_hours: int | None = None
    crl_include_expired: bool | None = None
    clock_skew: int | None = None
    serial_mode: str | None = None
    crl_url: tuple[str, ...] = ()
    ca_issuers_url: tuple[str, ...] = ()
    ocsp_url: tuple[str, ...] = ()
    approval: str | None = None

    def applied_to(self, base: authority.CaOptions) -> authority.CaOptions:
        changes: dict = {}
        if self.policy is not None or self.preserve_dn is not None:
            preserve = base.policy.preserve if self.preserve_dn is None else self.preserve_dn
            changes["policy"] = (Policy.parse(self.policy, preserve) if self.policy
                                 else dataclasses.replace(base.policy, preserve=preserve))
        for name, field in (("copy_extensions", "copy_extensions"),
                            ("unique_subject", "unique_subject"),
                            ("default_days", "default_days"), ("crl_hours", "crl_hours"),
                            ("crl_include_expired", "crl_include_expired"),
                            ("clock_skew", "clock_skew_seconds"),
                            ("serial_mode", "serial_mode"), ("approval", "approval")):
            if getattr(self, name) is not None:
                changes[field] = getattr(self, name)
        if self.profile_days:
            days = dict(base.profile_days)
            for item in self.profile_days:
                name, _, value = item.partition("=")
                if name not in PROFILES or not value.isdigit():
                    raise BadInput(f"profile days {item!r}: expected PROFILE=DAYS with PROFILE "
                                   f"one of {', '.join(PROFILES)}")
                days[name] = int(value)
            changes["profile_days"] = days
        if self.crl_url or self.ca_issuers_url or self.ocsp_url:
            changes["urls"] = CaUrls(self.crl_url or base.urls.crl,
                                     self.ca_issuers_url or base.urls.ca_issuers,
                                     self.ocsp_url or base.urls.ocsp)
        return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------- views

def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def ca_view(ca) -> dict:
    return {
        "name": ca.name, "subject": ca.subject, "key": ca.key_type,
        "parent": ca.parent.name if ca.parent else None,
        "not_before": ca.not_before.isoformat(), "not_after": ca.not_after.isoformat(),
        "policy": ca.policy, "copy_extensions": ca.copy_extensions,
        "unique_subject": ca.unique_subject, "default_days": ca.default_days,
        "profile_days": ca.profile_days, "crl_hours": ca.crl_hours,
        "crl_include_expired": ca.crl_include_expired,
        "clock_skew_seconds": ca.clock_skew_seconds, "serial_mode": ca.serial_mode,
        "next_serial": ca.next_serial if ca.serial_mode == "sequential" else None,
        "crl_number": ca.crl_number, "crl_urls": ca.crl_urls,
        "ca_issuers_urls": ca.ca_issuers_urls, "ocsp_urls": ca.ocsp_urls,
        "approval": ca.approval, "handed_over_at": _iso(ca.handed_over_at),
        "handed_over_to": ca.handed_over_to, **_key_view(ca.key_pem),
    }


def _key_view(key_pem: str) -> dict:
    found = protection(key_pem)
    return {"key_protection": str(found), "key_protection_current": found.is_current()}


def cert_view(record, ca_name: str) -> dict:
    return {
        "ca": ca_name, "serial": record.serial, "status": STATUS_WORDS[record.status],
        "subject": record.subject, "profile": record.profile,
        "not_before": _iso(record.not_before), "not_after": record.not_after.isoformat(),
        "revoked_at": _iso(record.revoked_at), "reason": record.revocation_reason,
        "invalidity_date": _iso(record.invalidity_date),
    }


def crl_view(ca_name: str, row) -> dict:
    return {"ca": ca_name, "crl_number": row.number, "entries": row.entries,
            "this_update": row.this_update.isoformat(),
            "next_update": row.next_update.isoformat()}


# Called with what a use case issued, inside its transaction: raising rolls it back.
BeforeCommit = Callable[[x509.Certificate | x509.CertificateRevocationList], None]


@dataclass(frozen=True)
class Issued:
    info: dict  # cert_view plus the warnings
    certificate: x509.Certificate
    warnings: list[str]


@dataclass(frozen=True)
class CrlResult:
    info: dict
    crl: x509.CertificateRevocationList
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------- CAs

def create_ca(ctx: ServiceContext, *, name: str, subject: str, key_type: str, days: int,
              passphrase: bytes, changes: CaChanges = CaChanges(), parent: str | None = None,
              parent_passphrase: bytes | None = None) -> tuple[dict, list[str]]:
    """A root CA, or a subordinate CA signed by ``parent``. Returns (view, warnings)."""
    options = changes.applied_to(authority.CaOptions())
    subject_name = parse_name(subject)
    with ctx.transaction() as session:
        parent_ca = signer = None
        notes: list[str] = []
        if parent:
            parent_ca = authority.get_ca(session, parent)
            signer, notes = authority.unlock(session, parent_ca, parent_passphrase)
        ca, warnings = authority.create_ca(
            session, name=name, subject=subject_name, key_type=key_type, passphrase=passphrase,
            now=ctx.clock(), days=days, options=options, parent=parent_ca, parent_signer=signer)
        view = ca_view(ca)
        ctx.audit(session, "ca.create", f"ca:{ca.name}",
                  {"subject": view["subject"], "key_type": key_type, "days": days,
                   "parent": parent})
        return view, [*notes, *warnings]


def configure_ca(ctx: ServiceContext, name: str, changes: CaChanges) -> dict:
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        authority.configure(session, ca, changes.applied_to(authority.CaOptions.from_ca(ca)))
        ctx.audit(session, "ca.configure", f"ca:{ca.name}",
                  {k: v for k, v in vars(changes).items() if v is not None})
        return ca_view(ca)


def list_cas(ctx: ServiceContext) -> list[dict]:
    with ctx.transaction() as session:
        return [ca_view(ca) for ca in authority.list_cas(session)]


def show_ca(ctx: ServiceContext, name: str) -> tuple[dict, x509.Certificate]:
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        return ca_view(ca), authority.ca_certificate(ca)


def sign_request(ctx: ServiceContext, name: str, csr_data: bytes, *, passphrase: bytes,
                 profile: str, days: int | None = None, md: str | None = None,
                 before_commit: BeforeCommit | None = None) -> Issued:
    """Sign a request at once, in this process (no queue). ``before_commit`` gets the
    certificate while the transaction is still open: a front end writes its output file
    aside there, and if that fails nothing is issued."""
    digest = authority.with_digest_check(md)
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        signer, notes = authority.unlock(session, ca, passphrase)
        result = authority.sign_csr(session, ca, signer, csr_data, profile=profile, days=days,
                                    digest=digest, now=ctx.clock())
        info = cert_view(result.record, ca.name)
        ctx.audit(session, "cert.issue", f"ca:{ca.name}/serial:{info['serial']}",
                  {"subject": info["subject"], "profile": profile, "days": days,
                   "how": "signed at once (ca sign)"})
        if before_commit is not None:
            before_commit(result.certificate)
    warnings = [*notes, *result.warnings]
    return Issued({**info, "warnings": warnings}, result.certificate, warnings)


def parse_time(text: str | None) -> dt.datetime | None:
    """An ISO 8601 time as a front end receives it; naive means UTC."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{text!r} is not an ISO 8601 time (2026-11-27T10:00:00Z)") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def revoke(ctx: ServiceContext, name: str, serial: str, *, reason: str = "unspecified",
           invalidity_date: dt.datetime | None = None) -> dict:
    number = authority.parse_serial(serial)
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        record = authority.revoke(session, ca, number, now=ctx.clock(), reason=reason,
                                  invalidity_date=invalidity_date)
        view = cert_view(record, ca.name)
        ctx.audit(session, "cert.revoke", f"ca:{ca.name}/serial:{view['serial']}",
                  {"subject": view["subject"], "reason": reason,
                   "invalidity_date": invalidity_date.isoformat() if invalidity_date
                   else None})
        return view


def status(ctx: ServiceContext, name: str, serial: str) -> tuple[dict, str]:
    """As ``openssl ca -status``: (view, 'Valid' | 'Revoked' | 'Expired')."""
    number = authority.parse_serial(serial)
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        record, state = authority.status(session, ca, number, ctx.clock())
        info = cert_view(record, ca.name)
    return {**info, "status": state.lower()}, state


def update_db(ctx: ServiceContext, name: str) -> int:
    with ctx.transaction() as session:
        return authority.update_db(session, authority.get_ca(session, name), ctx.clock())


def release_hold(ctx: ServiceContext, name: str, serial: str) -> dict:
    number = authority.parse_serial(serial)
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        view = cert_view(authority.release_hold(session, ca, number, ctx.clock()), ca.name)
        ctx.audit(session, "cert.release_hold", f"ca:{ca.name}/serial:{view['serial']}", {})
        return view


def generate_crl(ctx: ServiceContext, name: str, *, passphrase: bytes,
                 before_commit: BeforeCommit | None = None) -> CrlResult:
    """The CA's next CRL; ``before_commit`` as for ``sign_request`` (a failed output write
    then consumes no CRL number)."""
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        signer, notes = authority.unlock(session, ca, passphrase)
        row = authority.generate_crl(session, ca, signer, ctx.clock())
        crl = x509.load_der_x509_crl(row.der)
        ctx.audit(session, "crl.issue", f"ca:{ca.name}/crl:{row.number}",
                  {"entries": row.entries, "next_update": row.next_update.isoformat()})
        if before_commit is not None:
            before_commit(crl)
        return CrlResult(crl_view(name, row), crl, tuple(notes))


def change_passphrase(ctx: ServiceContext, name: str, *, passphrase: bytes,
                      new_passphrase: bytes) -> dict:
    """Re-encrypt CA ``name``'s key under a new passphrase. Workers keep the key they hold in
    memory; one that starts later unlocks with the passphrase it is given then."""
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        notes = authority.change_passphrase(session, ca, passphrase, new_passphrase)
        ctx.audit(session, "ca.passwd", f"ca:{ca.name}", {})
        return {**ca_view(ca), "notes": notes}


def latest_crl(ctx: ServiceContext, name: str) -> CrlResult:
    with ctx.transaction() as session:
        row = authority.latest_crl(session, authority.get_ca(session, name))
        if row is None:
            raise NotFound(f"CA {name!r} has issued no CRL yet: run pkiq ca gencrl {name}")
        return CrlResult(crl_view(name, row), x509.load_der_x509_crl(row.der))


def import_openssl(ctx: ServiceContext, folder: Path, *, name: str, config: Path | None,
                   import_passphrase: bytes | None, passphrase: bytes) -> dict:
    """Adopt a demoCA; the view carries the counts per index status and the notes."""
    check_passphrase(passphrase, f"the passphrase of CA {name!r}")
    demo = read_democa(folder, config)
    with ctx.transaction() as session:
        ca = adopt(session, demo, name=name, import_passphrase=import_passphrase or passphrase,
                   passphrase=passphrase, now=ctx.clock())
        info = ca_view(ca)
        ctx.audit(session, "ca.import", f"ca:{ca.name}", {"folder": str(folder)})
    counts = {s: sum(1 for r in demo.rows if r.status == s) for s in "VRE"}
    return {**info, "imported": counts, "notes": demo.notes}


HANDOVER_WARNING = ("pkiq still signs with CA {name!r} and renews its CRL: if openssl ca "
                    "signs or issues CRLs from this export too, the two number serials and "
                    "CRLs independently and hand out the same ones. Put it to work with "
                    "export-openssl --handover, which stops pkiq using the CA")


def export_openssl(ctx: ServiceContext, name: str, folder: Path, *,
                   handover: bool = False) -> dict:
    """Write a demoCA that ``openssl ca`` keeps using; the key stays encrypted. With
    ``handover`` the CA is openssl's from then on: pkiq stops signing with it and renewing
    its CRL. The folder is written before the handover commits, so a failed write hands
    nothing over."""
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        if handover:
            authority.hand_over(session, ca, str(folder.resolve()), ctx.clock())
            ctx.audit(session, "ca.handover", f"ca:{ca.name}", {"folder": str(folder)})
        files, notes = render_democa(session, ca, folder, ctx.clock())
        write_tree(folder, files, private={"private/cakey.pem"})
        if ca.handed_over_at is None:
            notes = [*notes, HANDOVER_WARNING.format(name=name)]
        info = ca_view(ca)
    return {"folder": str(folder), "files": sorted(files), "notes": notes,
            "handed_over": handover, "ca": info}


# ---------------------------------------------------------------- issued certificates

def _find(session, serial: str, ca_name: str | None):
    number = authority.parse_serial(serial)
    if ca_name:
        ca = authority.get_ca(session, ca_name)
        return authority.find_certificate(session, ca, number), ca
    found = authority.find_by_serial(session, number)
    if not found:
        raise NotFound(f"no certificate with serial {authority.serial_hex(number)}")
    if len(found) > 1:
        names = ", ".join(r.ca.name for r in found)
        raise BadInput(f"serial {found[0].serial} exists in several CAs ({names}): add --ca")
    return found[0], found[0].ca


def show_certificate(ctx: ServiceContext, serial: str, ca_name: str | None = None
                     ) -> tuple[dict, Decoded | None]:
    """The index entry, and the certificate decoded (None for an index row imported
    without its newcerts/ file)."""
    with ctx.transaction() as session:
        record, ca = _find(session, serial, ca_name)
        info, der = cert_view(record, ca.name), record.der
    if der is None:
        return info, None
    decoded = Decoded("certificate", x509.load_der_x509_certificate(der))
    return {**info, "certificate": describe(decoded)}, decoded


def certificate_with_chain(ctx: ServiceContext, serial: str, ca_name: str | None = None, *,
                           chain: bool = False) -> list[x509.Certificate]:
    """The issued certificate, then (with ``chain``) its issuing CAs up to the root."""
    with ctx.transaction() as session:
        record, ca = _find(session, serial, ca_name)
        if record.der is None:
            raise NotFound(f"serial {record.serial} was imported from index.txt without its "
                           "certificate (not in newcerts/)")
        extra = authority.chain(session, ca) if chain else []
        return [x509.load_der_x509_certificate(record.der), *extra]


def unlock_check(ctx: ServiceContext) -> dict:
    """Which CAs the service's own passphrase (PKIQ_CA_PASSPHRASE_FILE, PKIQ_CA_PASSPHRASE)
    unlocks, so that a worker says so at start instead of failing every job later. Expired
    CAs, and CAs handed over to openssl ca, sign nothing here and are left out."""
    try:
        passphrase, problem = ctx.settings.passphrase(), None
    except PkiqError as exc:
        passphrase, problem = None, str(exc)
    unlocked, locked, notes = [], [], []
    with ctx.transaction() as session:
        for ca in authority.list_cas(session):
            if ca.not_after <= ctx.clock() or ca.handed_over_at is not None:
                continue
            try:
                _, said = authority.unlock(session, ca, passphrase)
            except PkiqError as exc:
                locked.append({"ca": ca.name, "error": problem or str(exc)})
            else:
                unlocked.append(ca.name)
                notes += said
    return {"unlocked": unlocked, "locked": locked, "passphrase_error": problem,
            "notes": notes}
