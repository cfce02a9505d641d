"""CA operations over the database: create, sign, revoke, status, updatedb, gencrl.

Each function works inside the caller's session and flushes; the caller commits, so one
operation is one transaction and a refused request leaves the database as it was.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from .crl import RevokedEntry, build_crl, reason_name
from .csr import check_expressway_names, check_key, load_csr
from .errors import BadInput, CaExpired, Conflict, NotFound, PolicyViolation, WrongPassphrase
from .issuance import (
    COPY_MODES,
    CaUrls,
    build_certificate,
    request_extensions,
    validity_window,
)
from .keys import (
    DIGESTS,
    MIN_PASSPHRASE,
    Signer,
    SoftwareSigner,
    check_digest,
    check_passphrase,
    decrypt_key,
    describe_key,
    encrypt_key,
    generate_key,
    passphrase_length,
    reencrypt_key,
)
from .models import Certificate, CertificateAuthority, Crl, OcspInvalidation
from .names import canonical_name, check_name, check_no_email, openssl_oneline, without_email
from .pkcs8 import current as current_protection
from .pkcs8 import protection
from .policy import POLICY_ANYTHING, Policy
from .profiles import PROFILES, Profile, get_profile
from .serials import MAX_SERIAL_BITS, Random, parse_serial, random_serial, serial_hex
from .sql import InsertIgnoringConflicts

__all__ = ["parse_serial", "random_serial", "serial_hex"]  # re-exported for front ends

ROOT_PROFILE = Profile("root", "self-signed root CA", is_ca=True, san_types=(),
                       copyable=frozenset())
SERIAL_MODES = ("random", "sequential")
MAX_DAYS = 36500  # a century: past that it is a typo, and datetime arithmetic overflows
MAX_CRL_HOURS = 24 * 3650
MAX_CLOCK_SKEW = 86400
_SERIAL_ATTEMPTS = 5


@dataclass(frozen=True)
class CaOptions:
    """The ``[ CA_default ]`` part of an OpenSSL config, as pkiq keeps it per CA."""

    policy: Policy = POLICY_ANYTHING
    copy_extensions: str = "copy"
    unique_subject: bool = False
    default_days: int = 365
    profile_days: dict = field(default_factory=dict)
    crl_hours: int = 168
    crl_include_expired: bool = True
    clock_skew_seconds: int = 300
    serial_mode: str = "random"
    urls: CaUrls = CaUrls()
    approval: str = "auto"  # manual: queued requests wait for an approver

    def __post_init__(self):
        if self.approval not in ("auto", "manual"):
            raise BadInput("approval must be auto or manual")
        if self.copy_extensions not in COPY_MODES:
            raise BadInput(f"copy_extensions must be one of {', '.join(COPY_MODES)}")
        if self.serial_mode not in SERIAL_MODES:
            raise BadInput(f"serial mode must be one of {', '.join(SERIAL_MODES)}")
        _check_range("default_days", self.default_days, 1, MAX_DAYS)
        _check_range("CRL hours", self.crl_hours, 1, MAX_CRL_HOURS)
        _check_range("clock skew", self.clock_skew_seconds, 0, MAX_CLOCK_SKEW)
        for name, days in self.profile_days.items():
            if name not in PROFILES:
                raise BadInput(f"unknown profile {name!r} in profile days")
            _check_range(f"days for profile {name}", days, 1, MAX_DAYS)
        for url in (*self.urls.crl, *self.urls.ca_issuers, *self.urls.ocsp):
            _check_url(url)

    @classmethod
    def from_ca(cls, ca: CertificateAuthority) -> CaOptions:
        return cls(
            policy=Policy.from_dict(ca.policy), copy_extensions=ca.copy_extensions,
            unique_subject=ca.unique_subject, default_days=ca.default_days,
            profile_days=dict(ca.profile_days or {}), crl_hours=ca.crl_hours,
            crl_include_expired=ca.crl_include_expired,
            clock_skew_seconds=ca.clock_skew_seconds, serial_mode=ca.serial_mode,
            urls=CaUrls(tuple(ca.crl_urls), tuple(ca.ca_issuers_urls), tuple(ca.ocsp_urls)),
            approval=ca.approval)

    def apply_to(self, ca: CertificateAuthority) -> None:
        self.policy.check_against(ca_certificate(ca).subject)
        ca.policy = self.policy.to_dict()
        ca.copy_extensions = self.copy_extensions
        ca.unique_subject = self.unique_subject
        ca.default_days = self.default_days
        ca.profile_days = dict(self.profile_days)
        ca.crl_hours = self.crl_hours
        ca.crl_include_expired = self.crl_include_expired
        ca.clock_skew_seconds = self.clock_skew_seconds
        ca.serial_mode = self.serial_mode
        ca.crl_urls = list(self.urls.crl)
        ca.ca_issuers_urls = list(self.urls.ca_issuers)
        ca.ocsp_urls = list(self.urls.ocsp)
        ca.approval = self.approval


def _check_range(what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise BadInput(f"{what} must be between {low} and {high}, not {value}")


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ldap") or not parts.netloc:
        raise BadInput(f"{url!r}: distribution and access URLs must be http(s) or ldap URLs")
    if not url.isascii() or any(c.isspace() for c in url):
        raise BadInput(f"{url!r}: use the ASCII (punycode, percent-encoded) form of the URL")


@dataclass
class SignResult:
    record: Certificate
    certificate: x509.Certificate
    warnings: list[str]
    row: dict | None = None  # the index row not written yet (a batch's, see PendingCertificates)


def subject_key(subject_text: str) -> str:
    """What the unique_subject index holds for a subject."""
    return hashlib.sha256(subject_text.encode("utf-8")).hexdigest()


def spki_fingerprint(public_key) -> str:
    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


# ---------------------------------------------------------------- serials

def _next_serial(session: Session, ca: CertificateAuthority, rng: Random,
                 pending: PendingCertificates | None = None) -> int:
    if ca.serial_mode == "random":
        return random_serial(rng)
    serial = pending.take_serial(ca) if pending is not None else None
    if serial is None:  # a single signature, or a batch without a block for this CA
        [serial] = reserve_serials(session, ca, 1)
    return serial


_CAS = CertificateAuthority.__table__


def reserve_serials(session: Session, ca: CertificateAuthority, count: int) -> range:
    """Take ``count`` consecutive serials of sequential CA ``ca`` in ``session``'s
    transaction: read ``next_serial``, advance it by ``count``, write it back.

    Under a row lock (``FOR NO KEY UPDATE`` on PostgreSQL; on SQLite the writer lock of
    BEGIN IMMEDIATE) rather than a conditional ``UPDATE ... WHERE next_serial = :old``: the
    column is hex text SQL cannot add to, so it is read and computed here either way, and
    the lock makes that one step without a retry loop for when a concurrent reservation
    wins. NO KEY UPDATE does not conflict with the KEY SHARE every signer holds (see
    ``lock_in_service``), only with another reservation or a CRL, for as long as this
    transaction lasts: keep it short (``reserve_serials_apart``).

    ``ca.next_serial`` is set to what was stored without being marked changed, so the ORM
    never writes an older value back. Refused as a whole when the block would pass RFC
    5280's 20 octets, or when the CA was handed over meanwhile."""
    row = session.execute(
        select(_CAS.c.next_serial, _CAS.c.handed_over_at, _CAS.c.handed_over_to)
        .where(_CAS.c.id == ca.id).with_for_update(key_share=True)).one()
    if row.handed_over_at is not None:
        set_committed_value(ca, "handed_over_at", row.handed_over_at)
        set_committed_value(ca, "handed_over_to", row.handed_over_to)
        check_in_service(ca)
    first = int(row.next_serial, 16)
    if (first + count - 1) >> MAX_SERIAL_BITS:
        raise PolicyViolation(f"CA {ca.name!r} has used up its sequential serials (RFC 5280 "
                              "allows 20 octets); switch it to random serials with "
                              f"pkiq ca set {ca.name} --serial-mode random", "serial",
                              "sequential-exhausted")
    stored = serial_hex(first + count)
    session.execute(update(_CAS).where(_CAS.c.id == ca.id).values(next_serial=stored))
    set_committed_value(ca, "next_serial", stored)
    return range(first, first + count)


def reserve_serials_apart(session: Session, ca: CertificateAuthority, count: int) -> range:
    """``reserve_serials`` for a batch about to sign. On PostgreSQL it runs in a short
    transaction of its own that commits before the first signature, so the CA row is not
    held while the batch signs: other workers on any host take their blocks meanwhile, and
    ``generate_crl`` does not wait for the batch. The caller's transaction must not hold a
    lock on the CA row stronger than KEY SHARE (it would wait for itself): reserve right
    after claiming the jobs. A batch that rolls back leaves its block unused, and so does a
    job of it that fails: a gap in the numbering, which RFC 5280 allows (a serial must be
    unique per CA, not consecutive) and ``openssl ca`` takes as it comes (its serial file
    need only be past every serial in index.txt).

    On SQLite it stays in the caller's transaction: that holds the writer lock already
    (BEGIN IMMEDIATE), and a second connection would wait for it forever."""
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        return reserve_serials(session, ca, count)
    with Session(bind.engine) as apart, apart.begin():
        return reserve_serials(apart, ca, count)


# ---------------------------------------------------------------- CAs

@functools.lru_cache(maxsize=128)
def load_certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def ca_certificate(ca: CertificateAuthority) -> x509.Certificate:
    return load_certificate(ca.cert_der)


# Built once: every signature, revocation and CRL looks its CA up, and building a statement
# (and its cache key) costs more than running it on SQLite.
_CA_NAMED = select(CertificateAuthority).where(CertificateAuthority.name == bindparam("name"))


def get_ca(session: Session, name: str) -> CertificateAuthority:
    # A name no CA can have (control characters, NUL: PostgreSQL refuses those in text) is
    # not looked up at all.
    printable = name.isprintable() and len(name) <= 255
    ca = session.scalar(_CA_NAMED, {"name": name}) if printable else None
    if ca is None:
        known = session.scalars(select(CertificateAuthority.name)).all()
        hint = f"; known CAs: {', '.join(known)}" if known else "; none exists yet"
        raise NotFound(f"no CA named {name[:80]!r}{hint}")
    return ca


def list_cas(session: Session) -> list[CertificateAuthority]:
    return list(session.scalars(select(CertificateAuthority).order_by(CertificateAuthority.id)))


def load_signer(ca: CertificateAuthority, passphrase: bytes | None) -> Signer:
    """Decrypt the CA key (once per process is enough) and check it belongs to the CA cert."""
    return SoftwareSigner(_private_key(ca, passphrase))


def _private_key(ca: CertificateAuthority, passphrase: bytes | None):
    if not passphrase:
        raise WrongPassphrase(f"CA {ca.name!r}: its key is encrypted; give its passphrase")
    key = decrypt_key(ca.key_pem, passphrase, what=f"the key of CA {ca.name!r}")
    check_key_matches(SoftwareSigner(key), ca_certificate(ca), ca.name)
    return key


def unlock(session: Session, ca: CertificateAuthority,
           passphrase: bytes | None) -> tuple[Signer, list[str]]:
    """``load_signer`` for a command in the caller's transaction, which also brings the key
    at rest up to date: stored under less than today's work factor (pkiq before 600,000
    PBKDF2 iterations, or an older scheme), it is re-encrypted with the same passphrase and
    stored when the transaction commits. Returns the signer and notes for the operator (the
    upgrade; a passphrase shorter than the rule for new ones).

    The store is conditional on the key being the one read (``UPDATE ... WHERE key_pem =
    old``): two processes upgrading at once store one valid encryption and the other
    changes nothing, and a ``ca passwd`` that committed meanwhile is never undone."""
    key = _private_key(ca, passphrase)
    notes = []
    was = protection(ca.key_pem)
    if not was.is_current():
        stored = session.execute(
            update(CertificateAuthority)
            .where(CertificateAuthority.id == ca.id, CertificateAuthority.key_pem == ca.key_pem)
            .values(key_pem=reencrypt_key(key, passphrase))
            .execution_options(synchronize_session="fetch")).rowcount
        if stored:
            notes.append(f"the key of CA {ca.name!r} was stored with {was}; re-encrypted "
                         f"with {current_protection()}")
    if passphrase_length(passphrase) < MIN_PASSPHRASE:
        notes.append(f"the passphrase of CA {ca.name!r} is shorter than {MIN_PASSPHRASE} "
                     f"characters, the rule for new ones: change it with pkiq ca passwd "
                     f"{ca.name}")
    return SoftwareSigner(key), notes


def change_passphrase(session: Session, ca: CertificateAuthority, passphrase: bytes,
                      new_passphrase: bytes) -> list[str]:
    """Re-encrypt the CA key under ``new_passphrase`` (today's work factor). The row is
    locked for update first, so two changes, or a change and an upgrade, apply one after
    the other to the latest key. Returns notes (a handed-over CA's exported key)."""
    check_passphrase(new_passphrase, f"the new passphrase of CA {ca.name!r}")
    session.refresh(ca, with_for_update=True)
    ca.key_pem = encrypt_key(_private_key(ca, passphrase), new_passphrase)
    session.flush()
    if ca.handed_over_at is None:
        return []
    return [f"CA {ca.name!r} was handed over to openssl ca in {ca.handed_over_to}: its "
            "private/cakey.pem there keeps the old passphrase (openssl pkcs8 -topk8 -v2 "
            f"aes-256-cbc -iter {current_protection().iterations} re-encrypts it)"]


def check_key_matches(signer: Signer, cert: x509.Certificate, name: str) -> None:
    if spki_fingerprint(signer.public_key()) != spki_fingerprint(cert.public_key()):
        raise BadInput(f"the private key does not belong to the certificate of CA {name!r}")


URL_SUFFIXES = (".crl", ".crt", ".pem")


def check_name_free(session: Session, name: str, cert: x509.Certificate | None = None) -> None:
    """A new CA needs a new name and, when adopted, a key no other pkiq CA holds."""
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(
            ".", "").isalnum() or not name.isascii():
        raise BadInput(f"CA name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
    if name.lower().endswith(URL_SUFFIXES):
        # The web app serves /ca/NAME.crl, .crl.pem, .crt, .pem: "A.crl" would make
        # /ca/A.crl.pem mean two files.
        raise BadInput(f"CA name {name!r}: a name ending in {', '.join(URL_SUFFIXES)} would "
                       "be ambiguous in the CA's download URLs (/ca/NAME.crl ...); choose "
                       "another")
    if session.scalar(select(CertificateAuthority.id).where(CertificateAuthority.name == name)):
        raise Conflict(f"a CA named {name!r} already exists")
    if cert is not None:
        owner = session.scalar(select(CertificateAuthority.name).where(
            CertificateAuthority.spki_sha256 == spki_fingerprint(cert.public_key())))
        if owner is not None:
            raise Conflict(f"this CA key already belongs to pkiq CA {owner!r}; two CAs on one "
                           "key would hand out the same serials and CRL numbers")


def new_ca_row(name: str, cert: x509.Certificate, key_pem: str, now: dt.datetime,
               parent: CertificateAuthority | None = None) -> CertificateAuthority:
    return CertificateAuthority(
        name=name, parent_id=parent.id if parent else None,
        cert_der=cert.public_bytes(serialization.Encoding.DER), key_pem=key_pem,
        spki_sha256=spki_fingerprint(cert.public_key()), subject=openssl_oneline(cert.subject),
        key_type=describe_key(cert.public_key()), not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc, created_at=now, crl_number=0, next_serial="01")


def create_ca(
    session: Session,
    *,
    name: str,
    subject: x509.Name,
    key_type: str,
    passphrase: bytes,
    now: dt.datetime,
    days: int = 3650,
    options: CaOptions = CaOptions(),
    parent: CertificateAuthority | None = None,
    parent_signer: Signer | None = None,
    rng: Random = os.urandom,
) -> tuple[CertificateAuthority, list[str]]:
    """A root CA, or (with ``parent``) a subordinate CA whose issuance the parent records.
    Returns the CA and warnings (such as a validity cut to the parent's)."""
    check_name_free(session, name)
    check_passphrase(passphrase)
    check_name(subject, ca=True)
    check_no_email(subject)
    subject = canonical_name(subject)
    options.policy.check_against(subject)
    _check_range("CA validity days", days, 1, MAX_DAYS)
    key = generate_key(key_type)
    encrypted = encrypt_key(key, passphrase)
    warnings: list[str] = []
    if parent is None:
        not_before, not_after, _ = validity_window(
            now, days, dt.timedelta(seconds=options.clock_skew_seconds), None)
        cert = build_certificate(
            signer=SoftwareSigner(key), issuer_cert=None, subject=subject,
            public_key=key.public_key(), serial=random_serial(rng), not_before=not_before,
            not_after=not_after, profile=ROOT_PROFILE).certificate
    else:
        if parent_signer is None:
            raise WrongPassphrase(f"signing a subordinate CA needs the key of CA {parent.name!r}")
        issued = _issue(session, parent, parent_signer, subject=subject,
                        public_key=key.public_key(), profile=get_profile("subca"), days=days,
                        now=now, rng=rng)
        cert, warnings = issued.certificate, issued.warnings
    ca = new_ca_row(name, cert, encrypted, now, parent)
    options.apply_to(ca)
    session.add(ca)
    session.flush()
    return ca, warnings


def configure(session: Session, ca: CertificateAuthority, options: CaOptions) -> None:
    """Change a CA's settings. Turning unique_subject on indexes the valid certificates'
    subjects, and is refused (as ``openssl ca`` would refuse the index) when two valid
    certificates already share one."""
    turning_on = options.unique_subject and not ca.unique_subject
    options.apply_to(ca)
    if not options.unique_subject:
        session.execute(update(Certificate).where(Certificate.ca_id == ca.id)
                        .values(active_subject=None))
    elif turning_on:
        rows = session.execute(select(Certificate.id, Certificate.serial, Certificate.subject)
                               .where(Certificate.ca_id == ca.id, Certificate.status == "V"))
        seen: dict[str, str] = {}
        updates = []
        for row_id, serial, subject in rows:
            if subject in seen:
                raise Conflict(f"cannot turn unique_subject on: {subject} has two valid "
                               f"certificates (serials {seen[subject]} and {serial}); revoke "
                               "one first")
            seen[subject] = serial
            updates.append({"row": row_id, "key": subject_key(subject)})
        if updates:
            session.connection().execute(
                update(Certificate.__table__)
                .where(Certificate.__table__.c.id == bindparam("row"))
                .values(active_subject=bindparam("key")), updates)
    session.flush()


# ---------------------------------------------------------------- signing

SIGNING_INPUTS = ("cert_der", "policy", "copy_extensions", "unique_subject", "default_days",
                  "profile_days", "clock_skew_seconds", "serial_mode", "crl_urls",
                  "ca_issuers_urls", "ocsp_urls", "not_after", "handed_over_at")


def signing_inputs(ca: CertificateAuthority) -> tuple:
    """Every setting of the CA that a certificate it signs depends on (its certificate and
    so its key, policy, extensions, validity, serial mode, URLs): a certificate signed
    under other values than the CA has when it is recorded is signed again."""
    return tuple(getattr(ca, name) for name in SIGNING_INPUTS)


def resolve_days(ca: CertificateAuthority, profile: Profile, days: int | None) -> int:
    if days is not None:
        return days
    if profile.name in (ca.profile_days or {}):
        return int(ca.profile_days[profile.name])
    return profile.default_days or ca.default_days


def sign_csr(
    session: Session | None,
    ca: CertificateAuthority,
    signer: Signer,
    csr_data: bytes,
    *,
    profile: str,
    now: dt.datetime,
    days: int | None = None,
    digest: str | None = None,
    rng: Random = os.urandom,
    pending: PendingCertificates | None = None,
    verified: bool = False,
) -> SignResult:
    """Check a request against the CA's policy and the Expressway rules, then issue it.

    With ``pending`` (a batch of signings in one transaction) the index row is not written
    here but collected, for ``pending.write`` to insert with the batch's others in one
    statement; CAs with unique_subject are written at once whatever, since the next request
    in the batch must see this one's subject; with ``pending.apart`` there is no session
    (None) and the row is only returned. ``verified``: the request's signature was checked
    when it was queued (a job's), so it is not checked again."""
    csr = load_csr(csr_data, verified=verified)
    issuer = ca_certificate(ca)
    prof = get_profile(profile)
    check_digest(signer.public_key(), digest)
    subject = canonical_name(Policy.from_dict(ca.policy).apply(csr.subject, issuer.subject))
    subject, notes = without_email(subject)
    check_name(subject, ca=prof.is_ca)
    requested, warnings = check_request(csr, prof, ca.copy_extensions, subject)
    warnings[:0] = notes
    result = _issue(session, ca, signer, subject=subject, public_key=csr.public_key(),
                    profile=prof, days=days, now=now, rng=rng, requested=requested,
                    digest=digest, pending=pending)
    result.warnings[:0] = warnings
    return result


def check_request(csr: x509.CertificateSigningRequest, profile: Profile, copy_mode: str,
                  subject: x509.Name) -> tuple[list, list[str]]:
    """The profile's and the Expressway rules for a request, the same at submit (on the
    request's subject) and at signing (on the subject the policy made): its key, the
    extensions it may bring and their names, the CN. Returns the extensions to copy and the
    warnings."""
    warnings = check_key(csr.public_key())
    requested, notes = request_extensions(csr, profile, copy_mode)
    warnings += notes
    if not profile.is_ca:
        sans = next((list(ext) for ext, _ in requested
                     if isinstance(ext, x509.SubjectAlternativeName)), [])
        warnings += check_expressway_names(subject, sans, profile)
    return requested, warnings


class HandedOver(Conflict):
    """The CA now lives in an OpenSSL demoCA: two writers would number independently."""


def check_in_service(ca: CertificateAuthority) -> None:
    """A CA handed over to ``openssl ca`` changes only there: pkiq signing, revoking or
    issuing a CRL too would give out serials and CRL numbers that openssl also gives out."""
    if ca.handed_over_at is not None:
        raise HandedOver(
            f"CA {ca.name!r} was handed over to openssl ca on "
            f"{ca.handed_over_at:%Y-%m-%d %H:%M}Z ({ca.handed_over_to}): pkiq no longer "
            "signs, revokes or issues CRLs for it; use openssl ca there")


def hand_over(session: Session, ca: CertificateAuthority, folder: str,
              now: dt.datetime) -> None:
    """Record that ``openssl ca`` in ``folder`` owns the CA from now on. The CA row is locked
    for update first, so a signature, revocation or CRL under way (each holds the row at
    least KEY SHARE, see ``lock_in_service``) commits before the caller renders the export."""
    session.refresh(ca, with_for_update=True)
    check_in_service(ca)
    ca.handed_over_at, ca.handed_over_to = now.replace(microsecond=0), folder
    bump_status_generation(session, ca)  # OCSP: pkiq's index no longer has the last word


_HANDED_OVER_KEY_SHARE = (
    select(CertificateAuthority.handed_over_at)
    .where(CertificateAuthority.id == bindparam("id"))
    .with_for_update(read=True, key_share=True))


def lock_in_service(session: Session, ca: CertificateAuthority) -> None:
    """Hold the CA row for the rest of the transaction and check it is still pkiq's: a
    handover waits for this change to commit (and then exports it), and one that committed
    first is seen here. KEY SHARE, the weakest row lock: signers do not wait for each other,
    nor for a serial reservation or a CRL (which take NO KEY UPDATE), and those do not wait
    for them; only the handover's FOR UPDATE does (PostgreSQL; SQLite's writer lock already
    serialises every transaction)."""
    handed_over = session.connection().scalar(_HANDED_OVER_KEY_SHARE, {"id": ca.id})
    if handed_over is not None and ca.handed_over_at is None:
        session.refresh(ca)
    check_in_service(ca)


def _check_can_issue(ca: CertificateAuthority, issuer: x509.Certificate, profile: Profile,
                     now: dt.datetime) -> None:
    if now >= ca.not_after:
        raise CaExpired(f"CA {ca.name!r} expired on {ca.not_after:%Y-%m-%d}; it can sign "
                        "nothing more", "notAfter", "ca-valid")
    if profile.is_ca:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.path_length == 0:
            raise PolicyViolation(
                f"CA {ca.name!r} has pathlen 0: it may issue end-entity certificates only, "
                "not another CA (RFC 5280 4.2.1.9)", "basicConstraints", "pathlen")


def _issue(session: Session, ca: CertificateAuthority, signer: Signer, *, subject, public_key,
           profile, days, now, rng, requested=(), digest=None, pending=None) -> SignResult:
    issuer = ca_certificate(ca)
    if pending is None or not (pending.apart or ca.id in pending.in_service):
        lock_in_service(session, ca)  # held to the commit: once per CA and transaction
        if pending is not None:
            pending.in_service.add(ca.id)
    _check_can_issue(ca, issuer, profile, now)
    subject_text = openssl_oneline(subject)
    active = subject_key(subject_text) if ca.unique_subject else None
    if ca.unique_subject:
        _check_unique_subject(session, ca, subject_text, now)
    days = resolve_days(ca, profile, days)
    _check_range("validity days", days, 1, MAX_DAYS)
    not_before, not_after, warnings = validity_window(
        now, days, dt.timedelta(seconds=ca.clock_skew_seconds), ca.not_after)
    urls = CaUrls(tuple(ca.crl_urls), tuple(ca.ca_issuers_urls), tuple(ca.ocsp_urls))
    for _attempt in range(_SERIAL_ATTEMPTS):
        serial = _next_serial(session, ca, rng, pending)
        issued = build_certificate(
            signer=signer, issuer_cert=issuer, subject=subject, public_key=public_key,
            serial=serial, not_before=not_before, not_after=not_after, profile=profile,
            urls=urls, requested=requested, digest=digest)
        values = dict(
            ca_id=ca.id, serial=serial_hex(serial), status="V", subject=subject_text,
            active_subject=active, not_before=not_before, not_after=not_after,
            profile=profile.name, created_at=now,
            der=issued.certificate.public_bytes(serialization.Encoding.DER))
        if pending is not None and not ca.unique_subject:
            if not pending.apart:
                pending.rows.append(values)
            return SignResult(Certificate(**values), issued.certificate, warnings, values)
        if _insert_unless_taken(session, values):
            record = Certificate(**values)  # what was stored, for the caller to read
            return SignResult(record, issued.certificate, warnings)
        if ca.unique_subject:  # a concurrent signer took the subject: say which serial
            _check_unique_subject(session, ca, subject_text, now)
        if ca.serial_mode == "sequential":
            raise Conflict(f"serial {serial_hex(serial)} is already used by CA {ca.name!r}; "
                           "its next serial is behind its index")
        # a random serial collided (2^-126 odds, or a hostile rng): draw again
    raise Conflict(f"could not find a free serial for CA {ca.name!r}")


class BatchConflict(Exception):
    """A serial of a batch was taken after all (a colliding random serial, an index behind
    its sequential counter). Not any one request's fault: roll the batch back and sign its
    requests one per transaction, where each conflict is handled (or refused) on its own."""


@dataclass
class PendingCertificates:
    """Index rows signed in one transaction and written together by ``write``, the blocks
    of sequential serials the batch took for them, and the CAs whose rows it holds
    already (``lock_in_service``).

    ``apart``: signing outside any transaction (``ca.jobs.sign_claimed``). Nothing is read
    or held then: each ``SignResult.row`` is written later by a transaction that first holds
    and checks its CA (``ca.jobs.record_claimed``). Only for CAs without unique_subject (its
    check reads the index) and, if sequential, with a block of serials for every request."""

    rows: list[dict] = field(default_factory=list)
    serials: dict[int, Iterator[int]] = field(default_factory=dict)
    in_service: set[int] = field(default_factory=set)
    apart: bool = False

    def reserve_serials(self, session: Session, ca: CertificateAuthority, count: int,
                        *, apart: bool = True) -> None:
        """Take ``count`` serials of sequential CA ``ca`` for the batch at once, before it
        signs: in a transaction of its own (``reserve_serials_apart``), or with ``apart``
        false in ``session``'s, when that is short and commits before the signing."""
        reserve = reserve_serials_apart if apart else reserve_serials
        self.serials[ca.id] = iter(reserve(session, ca, count))

    def has_serials_for(self, ca: CertificateAuthority) -> bool:
        return ca.serial_mode != "sequential" or ca.id in self.serials

    def take_serial(self, ca: CertificateAuthority) -> int | None:
        """The next serial of the CA's block; None when it has none left."""
        return next(self.serials.get(ca.id, iter(())), None)

    def write(self, session: Session) -> None:
        """One ``INSERT ... ON CONFLICT DO NOTHING`` for all of them; ``BatchConflict`` if
        any was not written."""
        if not self.rows:
            return
        written = _INSERT_CERTIFICATE.execute(session, self.rows).all()
        if len(written) != len(self.rows):
            raise BatchConflict(f"{len(self.rows) - len(written)} of {len(self.rows)} serials "
                                "in the batch were taken")
        self.rows = []


def _insert_unless_taken(session: Session, values: dict) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING: False when the serial or (under unique_subject) the
    subject is taken. Cheaper than a savepoint per certificate, and the transaction stays
    usable on PostgreSQL, where a failed INSERT would abort it."""
    return _INSERT_CERTIFICATE.execute(session, values).first() is not None


_INSERT_CERTIFICATE = InsertIgnoringConflicts(Certificate.__table__,
                                              Certificate.__table__.c.id)


def _check_unique_subject(session, ca, subject_text, now):
    """Both lookups go through the (ca_id, active_subject) unique index: constant time
    however large the index grows (``configure`` fills it when unique_subject is turned on)."""
    key = subject_key(subject_text)
    # A valid entry past its notAfter is expired (as -updatedb would mark it): free it first.
    session.execute(
        update(Certificate)
        .where(Certificate.ca_id == ca.id, Certificate.active_subject == key,
               Certificate.not_after <= now)
        .values(status="E", active_subject=None))
    existing = session.scalar(select(Certificate).where(
        Certificate.ca_id == ca.id, Certificate.active_subject == key))
    if existing is not None:
        raise Conflict(f"CA {ca.name!r} has unique_subject = yes and already holds a valid "
                       f"certificate for {subject_text} (serial {existing.serial}); revoke it "
                       "first, or set unique_subject = no")


# ---------------------------------------------------------------- index

def find_certificate(session: Session, ca: CertificateAuthority, serial: int,
                     *, for_update: bool = False) -> Certificate:
    query = select(Certificate).where(Certificate.ca_id == ca.id,
                                      Certificate.serial == serial_hex(serial))
    record = session.scalar(query.with_for_update() if for_update else query)
    if record is None:
        raise NotFound(f"CA {ca.name!r} has issued no certificate with serial {serial_hex(serial)}")
    return record


def find_by_serial(session: Session, serial: int) -> list[Certificate]:
    query = select(Certificate).where(Certificate.serial == serial_hex(serial))
    return list(session.scalars(query))


def status(session: Session, ca: CertificateAuthority, serial: int,
           now: dt.datetime) -> tuple[Certificate, str]:
    """The entry and ``Valid``, ``Revoked`` or ``Expired`` as ``openssl ca -status`` says."""
    record = find_certificate(session, ca, serial)
    if record.status == "V" and record.not_after <= now:
        return record, "Expired"
    return record, {"V": "Valid", "R": "Revoked", "E": "Expired"}[record.status]


def revoke(
    session: Session,
    ca: CertificateAuthority,
    serial: int,
    *,
    now: dt.datetime,
    reason: str = "unspecified",
    invalidity_date: dt.datetime | None = None,
) -> Certificate:
    reason = reason_name(reason)
    lock_in_service(session, ca)
    if invalidity_date is not None and invalidity_date > now:
        raise BadInput("the invalidity date (when the key was compromised) cannot be in the "
                       "future")
    # Row lock: of two concurrent revocations, the second sees the first and is refused.
    record = find_certificate(session, ca, serial, for_update=True)
    if record.status == "R":
        raise Conflict(f"serial {record.serial} was already revoked on "
                       f"{record.revoked_at:%Y-%m-%d %H:%M:%S}Z ({record.revocation_reason})")
    record.status = "R"
    record.active_subject = None
    record.revoked_at = now.replace(microsecond=0)
    record.revocation_reason = reason
    record.invalidity_date = invalidity_date.replace(microsecond=0) if invalidity_date else None
    status_changed(session, ca, record.serial, now)
    session.flush()
    return record


def status_changed(session: Session, ca: CertificateAuthority, serial: str,
                   now: dt.datetime) -> int:
    """Record, in the caller's transaction, that ``serial``'s status changed: the CA's
    ``status_generation`` goes up by one (under the row lock the UPDATE takes, so
    generations commit in order) and the serial is listed under it. Every OCSP responder
    process compares the generation on each request and drops that serial's cached answers
    (``web.ocsp``); the CRL renewal is due from the same commit, as
    ``scheduler.upkeep.own_crl_reason`` finds a revocation after the last CRL."""
    generation = bump_status_generation(session, ca)
    session.add(OcspInvalidation(ca_id=ca.id, generation=generation, serial=serial,
                                 at=now.replace(microsecond=0)))
    return generation


def bump_status_generation(session: Session, ca: CertificateAuthority) -> int:
    """The CA's next ``status_generation``. Alone (no serial listed under it) it tells
    responders that every answer of the CA is void (a handover)."""
    generation = session.execute(
        update(CertificateAuthority).where(CertificateAuthority.id == ca.id)
        .values(status_generation=CertificateAuthority.status_generation + 1)
        .returning(CertificateAuthority.status_generation)
        .execution_options(synchronize_session=False)).scalar_one()
    set_committed_value(ca, "status_generation", generation)
    return generation


def release_hold(session: Session, ca: CertificateAuthority, serial: int,
                 now: dt.datetime) -> Certificate:
    """Take a certificate off hold: it is valid again and leaves the next full CRL (RFC 5280
    5.3.1 allows a certificateHold entry to be removed; other revocations are final)."""
    lock_in_service(session, ca)
    record = find_certificate(session, ca, serial, for_update=True)
    if record.status != "R" or record.revocation_reason != "certificateHold":
        raise Conflict(f"serial {record.serial} is not on hold (only certificateHold can be "
                       "released; other revocations are permanent)")
    record.status = "V" if record.not_after > now else "E"
    record.revoked_at = record.revocation_reason = record.invalidity_date = None
    if ca.unique_subject and record.status == "V":
        _check_unique_subject(session, ca, record.subject, now)
        record.active_subject = subject_key(record.subject)
    status_changed(session, ca, record.serial, now)
    session.flush()
    return record


def update_db(session: Session, ca: CertificateAuthority, now: dt.datetime) -> int:
    """``openssl ca -updatedb``: mark valid entries past their notAfter as expired."""
    lock_in_service(session, ca)
    result = session.execute(
        update(Certificate)
        .where(Certificate.ca_id == ca.id, Certificate.status == "V",
               Certificate.not_after <= now)
        .values(status="E", active_subject=None))
    return result.rowcount


# ---------------------------------------------------------------- CRLs

def generate_crl(
    session: Session, ca: CertificateAuthority, signer: Signer, now: dt.datetime
) -> Crl:
    """The CA's next CRL. The CA row is locked for the transaction, so two writers on any
    host take numbers one after the other; the unique (ca, number) index backs that up.
    NO KEY UPDATE, which signers' KEY SHARE does not hold up: a CRL does not wait for
    batches being signed."""
    session.refresh(ca, with_for_update={"key_share": True})
    check_in_service(ca)
    number = ca.crl_number + 1
    ca.crl_number = number
    query = select(Certificate.serial, Certificate.revoked_at, Certificate.revocation_reason,
                   Certificate.invalidity_date).where(
        Certificate.ca_id == ca.id, Certificate.status == "R")
    if not ca.crl_include_expired:
        query = query.where(Certificate.not_after > now)
    entries = [RevokedEntry(int(s, 16), r, reason, inv)
               for s, r, reason, inv in session.execute(query.order_by(Certificate.id))]
    this_update = now.replace(microsecond=0)
    next_update = this_update + dt.timedelta(hours=ca.crl_hours)
    crl = build_crl(signer=signer, issuer_cert=ca_certificate(ca), entries=entries,
                    number=number, this_update=this_update, next_update=next_update)
    row = Crl(ca_id=ca.id, number=number, this_update=this_update, next_update=next_update,
              entries=len(entries), der=crl.public_bytes(serialization.Encoding.DER))
    session.add(row)
    session.flush()
    return row


def latest_crl(session: Session, ca: CertificateAuthority) -> Crl | None:
    return session.scalar(select(Crl).where(Crl.ca_id == ca.id).order_by(Crl.number.desc())
                          .limit(1))


def chain(session: Session, ca: CertificateAuthority) -> list[x509.Certificate]:
    """The CA's certificate and its parents up to the root."""
    out, current = [], ca
    while current is not None:
        out.append(ca_certificate(current))
        current = current.parent
    return out


def with_digest_check(digest: str | None) -> str | None:
    """``--md``: SHA-256 or stronger only (see ``keys.signature_hash``)."""
    if digest is None:
        return None
    name = digest.lower().replace("-", "")
    if name not in DIGESTS:
        raise BadInput(f"digest {digest}: pkiq signs with {', '.join(DIGESTS)} only; SHA-1 is "
                       "broken (chosen-prefix collisions) and refused by current TLS clients, "
                       "even where older guides show -md sha1")
    return name

