"""Would a node accept this certificate? RFC 5280 path validation, then the revocation of
every certificate in the path with the sources and fallback an Expressway is set up with.

Who does what, and why:

* pyhanko-certvalidator builds every candidate path from the trusted list and the
  intermediates and validates it (RFC 5280 section 6.1: signatures, name chaining, validity,
  basic constraints and path length, key usage, name constraints, policies), checks the
  purpose's EKU, and judges CRLs (section 6.3: distribution points, deltas, indirect CRLs,
  a CRL signed by a separate key of the issuer) and OCSP responses (RFC 6960).
* By hand, because none of those does it:
  - the host name rule of the guide's TLS verify mode: the name must be in the subject's
    CN *or* a SAN (RFC 6125 and pyhanko's ``validate_tls`` ignore the CN once a SAN is
    present, which Expressway does not);
  - Expressway's choice of sources (OCSP, CRLs, CDP downloads) and its fallback when no
    answer can be had, and its rule that an expired CRL makes its CA's certificates count
    as revoked;
  - ``CrlIndex``: a plain complete CRL (no distribution point, no delta, no critical
    extension beyond the known ones), signed by the issuer in the path, is parsed once with
    ``cryptography`` and looked up by serial (a Rust scan the first time, a dict after).
    pyhanko walks a CRL's entries in Python for every check, which takes seconds on a CRL
    of a million entries; anything that is not plain goes to pyhanko, so the full section
    6.3 semantics stay with it.

Only self-signed members of the trusted list are trust anchors; the others serve as
intermediates, as OpenSSL (and so Expressway) builds a chain to a root and checks every CA
below it. Nothing here reads files or the network: the use case hands in the CRLs and OCSP
responses (``service.verify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from asn1crypto import x509 as a_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID, NameOID

from .errors import BadInput
from .names import openssl_oneline
from .trust import name_key

PURPOSES = {"serverAuth": "server_auth", "clientAuth": "client_auth"}
FALLBACKS = ("not-revoked", "revoked")
EXIT_CODES = {"valid": 0, "invalid": 4, "undetermined": 9}

# CRL extensions the fast path understands (RFC 5280 section 5.2); any other critical one,
# or a distribution point / delta, sends the CRL to pyhanko.
_PLAIN_CRL_EXTENSIONS = {ExtensionOID.CRL_NUMBER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
                         ExtensionOID.ISSUER_ALTERNATIVE_NAME,
                         ExtensionOID.AUTHORITY_INFORMATION_ACCESS}
_PLAIN_ENTRY_EXTENSIONS = {CRLEntryExtensionOID.CRL_REASON, CRLEntryExtensionOID.INVALIDITY_DATE}


@dataclass(frozen=True)
class RevocationSettings:
    """Expressway's "Certificate revocation checking" settings; the defaults are its own
    (all sources on, fallback "treat as not revoked")."""

    use_ocsp: bool = True
    use_crls: bool = True
    cdp_downloads: bool = True
    fallback: str = "not-revoked"

    def __post_init__(self):
        if self.fallback not in FALLBACKS:
            raise BadInput(f"fallback must be one of {', '.join(FALLBACKS)}, not "
                           f"{self.fallback!r}")


@dataclass(frozen=True)
class Request:
    cert: x509.Certificate
    trusted: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    at: dt.datetime | None = None  # None: the caller's clock is passed in by the use case
    purpose: str | None = None  # serverAuth | clientAuth
    host: str | None = None
    settings: RevocationSettings = RevocationSettings()

    def __post_init__(self):
        if self.purpose is not None and self.purpose not in PURPOSES:
            raise BadInput(f"purpose must be one of {', '.join(PURPOSES)}, not "
                           f"{self.purpose!r}")
        if self.at is None or self.at.tzinfo is None:
            raise BadInput("the time of the check must be given, with a time zone")


@dataclass(frozen=True)
class CertLine:
    """One certificate of the path: what was found good, or the rule it breaks."""

    position: int  # 0: the certificate checked, then towards the trust anchor
    role: str  # end-entity | intermediate | trust anchor
    subject: str
    sha256: str
    state: str  # ok | invalid | revoked | undetermined | unchecked
    detail: str
    revocation: str | None = None  # good | revoked | undetermined | not checked | None

    def view(self) -> dict:
        return {"position": self.position, "role": self.role, "subject": self.subject,
                "sha256": self.sha256, "state": self.state, "detail": self.detail,
                "revocation": self.revocation}

    def render(self) -> str:
        return (f"[{self.position}] {self.role}: {self.subject}: {self.state.upper()} - "
                f"{self.detail}")


@dataclass(frozen=True)
class Verdict:
    result: str  # valid | invalid | undetermined
    reason: str
    lines: tuple[CertLine, ...]
    at: dt.datetime
    settings: RevocationSettings

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.result]

    def view(self) -> dict:
        s = self.settings
        return {"result": self.result, "reason": self.reason, "at": self.at.isoformat(),
                "revocation": {"use_ocsp": s.use_ocsp, "use_crls": s.use_crls,
                               "cdp_downloads": s.cdp_downloads, "fallback": s.fallback},
                "path": [line.view() for line in self.lines]}

    def render(self) -> str:
        return "\n".join([*(line.render() for line in self.lines),
                          f"verdict: {self.result.upper()} - {self.reason}"])


# ------------------------------------------------------------------ inputs

def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle or one DER certificate; BadInput naming ``what``."""
    from .trust import load_bundle

    try:
        with _lenient():
            return load_bundle(data)
    except BadInput as exc:
        raise BadInput(f"{what}: {exc}") from None


@dataclass
class ParsedCrl:
    """One CRL, loaded once; its serial index is built on the first fast-path lookup."""

    der: bytes = field(repr=False)
    crl: x509.CertificateRevocationList = field(repr=False)
    source: str = ""
    _index: CrlIndex | None = field(default=None, repr=False)
    _plain: bool | None = None
    _digest: bytes | None = field(default=None, repr=False)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the DER, once: hashing a 40 MB CRL per check would cost more than the
        whole check."""
        if self._digest is None:
            self._digest = hashlib.sha256(self.der).digest()
        return self._digest

    @property
    def issuer(self) -> x509.Name:
        return self.crl.issuer

    @property
    def issuer_key(self) -> str:
        return name_key(self.crl.issuer)

    @property
    def plain(self) -> bool:
        """No distribution point, delta or unknown critical extension (RFC 5280 5.2), so the
        serial lookup is the whole answer once signature, issuer and dates are checked."""
        if self._plain is None:
            self._plain = all(e.oid in _PLAIN_CRL_EXTENSIONS for e in self.crl.extensions)
        return self._plain

    def index(self) -> CrlIndex:
        if self._index is None:
            self._index = CrlIndex(self.der, self.crl)
        return self._index


def parse_crls(data: bytes, source: str) -> list[ParsedCrl]:
    """The CRLs of a file (PEM, DER, zip or gzip, as ``ca.crl_decode`` reads them)."""
    from .crl_decode import decode_crls

    try:
        decoded, _notes = decode_crls(data)
    except BadInput as exc:
        raise BadInput(f"{source}: {exc}") from None
    return [ParsedCrl(d.der, d.crl, f"{source} ({d.source})" if len(decoded) > 1 else source)
            for d in decoded]


class CrlIndex:
    """Finds a serial in a plain CRL. The first lookup scans in Rust (cryptography's
    ``get_revoked_certificate_by_serial_number``, some 65 ms for a million entries), which
    is all a one-shot ``pkiq verify`` needs; the second builds a serial -> entry dict (about
    a second, once), so a long-lived caller's later lookups cost microseconds."""

    def __init__(self, der: bytes, crl: x509.CertificateRevocationList):
        self.der = der
        self.crl = crl
        self.lookups = 0
        self.serials: dict[int, int] | None = None
        self._plain_entries: bool | None = None

    @property
    def plain_entries(self) -> bool:
        """No entry carries a critical extension the fast path does not know (RFC 5280
        5.3: a CRL with one must not be used by whoever cannot process it, so pyhanko
        decides). A byte scan first: a critical extension is an OID, BOOLEAN TRUE (01 01 FF)
        and an OCTET STRING (04); only when those four bytes occur (perhaps by chance,
        inside a serial) are the entries walked."""
        if self._plain_entries is None:
            self._plain_entries = b"\x01\x01\xff\x04" not in self.der or all(
                not ext.critical or ext.oid in _PLAIN_ENTRY_EXTENSIONS
                for entry in self.crl for ext in entry.extensions)
        return self._plain_entries

    def find(self, serial: int) -> x509.RevokedCertificate | None:
        """The entry of ``serial``, or None. A negative serial (PKITS 4.4.14/15; RFC 5280
        forbids them, old CAs made them) goes to the dict: the Rust scan refuses it."""
        self.lookups += 1
        if self.serials is None and (self.lookups > 1 or serial < 0):
            self.serials = {entry.serial_number: n for n, entry in enumerate(self.crl)}
        if self.serials is None:
            return self.crl.get_revoked_certificate_by_serial_number(serial)
        number = self.serials.get(serial)
        return None if number is None else self.crl[number]


class CrlSet:
    """The CRLs a check may use, kept between checks so that a large CRL is parsed, its
    signature verified and its serials indexed once (``signed_by`` remembers)."""

    def __init__(self, crls: Iterable[ParsedCrl] = ()):
        self.crls: list[ParsedCrl] = []
        self._seen: set[bytes] = set()
        self._signed: dict[tuple[bytes, bytes], bool] = {}
        self.add(crls)

    def add(self, crls: Iterable[ParsedCrl]) -> None:
        for parsed in crls:
            key = parsed.digest
            if key not in self._seen:
                self._seen.add(key)
                self.crls.append(parsed)

    def for_issuer(self, name: x509.Name) -> list[ParsedCrl]:
        """By RFC 5280 7.1 name comparison (case and white space folded, any string type),
        as ``ca.trust.name_key`` does for the CRLs pkiq installs."""
        key = name_key(name)
        return [c for c in self.crls if c.issuer_key == key]

    def signed_by(self, parsed: ParsedCrl, issuer: x509.Certificate) -> bool:
        key = (parsed.digest, issuer.fingerprint(hashes.SHA256()))
        if key not in self._signed:
            try:
                self._signed[key] = parsed.crl.is_signature_valid(issuer.public_key())
            except (TypeError, ValueError, InvalidSignature):
                self._signed[key] = False
        return self._signed[key]


# ------------------------------------------------------------------ path

@dataclass
class Path:
    """The path found (anchor last), or the certificates of the best failed attempt."""

    certs: list[x509.Certificate]  # leaf first
    anchored: bool  # the last certificate is a trust anchor
    problem: tuple[int, str] | None  # (position, rule broken)
    validation_path: object | None = None  # pyhanko's ValidationPath when built


def _to_asn1(cert: x509.Certificate) -> a_x509.Certificate:
    return a_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _anchors(certs: Sequence[x509.Certificate]) -> list:
    """Trust anchors that keep their own constraints (path length, name constraints), as
    OpenSSL applies a root's basicConstraints to the chain below it (RFC 5937)."""
    from pyhanko_certvalidator.authority import CertTrustAnchor

    return [CertTrustAnchor(_to_asn1(c), derive_default_quals_from_cert=True) for c in certs]


def _from_asn1(cert) -> x509.Certificate:
    return x509.load_der_x509_certificate(cert.dump())


@contextlib.contextmanager
def _lenient():
    """Negative serial numbers (PKITS 4.4.14/15, some old CAs) are a deprecation warning in
    cryptography, not an error: the check reports on the certificate as it is."""
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield


def _algorithms():
    """What OpenSSL's ``verify`` accepts (and so an Expressway): MD2 and MD5 signatures and
    keys under 1024 bits refused, SHA-1 and 1024-bit DSA allowed (PKITS 4.1.4 uses both).
    pyhanko's default would refuse SHA-1 and RSA under 2048 bits."""
    from pyhanko_certvalidator.policy_decl import DisallowWeakAlgorithmsPolicy

    return DisallowWeakAlgorithmsPolicy(weak_hash_algos=frozenset({"md2", "md5"}),
                                        rsa_key_size_threshold=1024,
                                        dsa_key_size_threshold=1024)


def _no_revocation_policy():
    from pyhanko_certvalidator.policy_decl import (
        CertRevTrustPolicy,
        RevocationCheckingPolicy,
        RevocationCheckingRule,
    )

    rule = RevocationCheckingRule.NO_CHECK
    return CertRevTrustPolicy(RevocationCheckingPolicy(rule, rule))


def _crl_side_policy():
    """For CRLs pyhanko judges: a CRL signed by another certificate than the path's issuer
    needs that certificate's own path and status (PKITS 4.4.20/21)."""
    from pyhanko_certvalidator.policy_decl import (
        CertRevTrustPolicy,
        RevocationCheckingPolicy,
        RevocationCheckingRule,
    )

    rule = RevocationCheckingRule.CRL_REQUIRED
    return CertRevTrustPolicy(RevocationCheckingPolicy(rule, rule))


def split_trusted(trusted: Sequence[x509.Certificate]
                  ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(anchors, intermediates): only a self-issued, self-signed entry is an anchor."""
    anchors, others = [], []
    for cert in trusted:
        self_signed = False
        if cert.subject == cert.issuer:
            try:
                cert.verify_directly_issued_by(cert)
                self_signed = True
            except (ValueError, TypeError, InvalidSignature):
                pass
        (anchors if self_signed else others).append(cert)
    return anchors, others


_POSITION = re.compile(r"intermediate certificate (\d+)")


async def _build_and_validate(req: Request) -> Path:
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import (
        InvalidCertificateError,
        PathBuildingError,
        PathValidationError,
        ValidationError,
    )
    from pyhanko_certvalidator.validate import validate_usage

    anchors, others = split_trusted(req.trusted)
    if not anchors:
        return Path([req.cert], False, (0, "no trust anchor: the trusted CA list holds no "
                                           "self-signed root certificate"))
    context = ValidationContext(
        trust_roots=_anchors(anchors),
        other_certs=[_to_asn1(c) for c in [*others, *req.intermediates]],
        moment=req.at, allow_fetching=False, algorithm_usage_policy=_algorithms(),
        revinfo_policy=_no_revocation_policy())
    leaf = _to_asn1(req.cert)
    validator = CertificateValidator(leaf, validation_context=context)
    try:
        vpath = await validator.async_validate_path()
    except PathBuildingError as exc:
        issuer = openssl_oneline(req.cert.issuer)
        return Path([req.cert], False, (0, f"no path to a trusted root: issuer {issuer} is "
                                           f"neither trusted nor among the intermediates "
                                           f"({_clean(exc)})"))
    except PathValidationError as exc:
        certs = [_from_asn1(c) for c in exc.original_path.iter_certs(include_root=True)]
        certs.reverse()
        return Path(certs, True, (_failed_position(exc, len(certs)), _clean(exc)),
                    exc.original_path)
    except (InvalidCertificateError, ValidationError) as exc:
        return Path([req.cert], False, (0, _clean(exc)))
    certs = [_from_asn1(c) for c in vpath.iter_certs(include_root=True)]
    certs.reverse()
    path = Path(certs, True, None, vpath)
    if req.purpose:
        try:
            validate_usage(leaf, set(), {PURPOSES[req.purpose]}, extended_optional=True)
        except InvalidCertificateError:
            path.problem = (0, f"extended key usage: {_ekus(req.cert)} does not allow "
                               f"{req.purpose}")
    if path.problem is None and req.host:
        found = host_matches(req.cert, req.host)
        if not found:
            path.problem = (0, f"host name: {req.host} is neither the subject CN nor a SAN "
                               f"({', '.join(names_of(req.cert)) or 'no names'})")
    return path


def _failed_position(exc, length: int) -> int:
    """pyhanko names the failing certificate in its message ("intermediate certificate 2",
    counted from the anchor) and flags the end-entity; turn that into our leaf-first
    position."""
    if exc.is_ee_cert:
        return 0
    found = _POSITION.search(str(exc))
    if found:
        return max(0, (length - 1) - int(found.group(1)))
    return length - 1  # the trust anchor


def _clean(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace("The path could not be validated because ", "").rstrip(".")


def _ekus(cert: x509.Certificate) -> str:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "no EKU"
    return "EKU " + ", ".join(getattr(o, "_name", o.dotted_string) for o in eku)


# ------------------------------------------------------------------ host name

def names_of(cert: x509.Certificate) -> list[str]:
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
             if isinstance(a.value, str)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    names += san.get_values_for_type(x509.DNSName)
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def host_matches(cert: x509.Certificate, host: str) -> bool:
    """The guide's TLS verify mode: the peer address must be in the subject's Common Name or
    a Subject Alternative Name. DNS names compare case-insensitively, a leading ``*.``
    stands for exactly one label (RFC 6125 6.4.3); IP addresses compare as addresses."""
    wanted = host.strip().rstrip(".").lower()
    try:
        wanted_ip = ipaddress.ip_address(wanted)
    except ValueError:
        wanted_ip = None
    for name in names_of(cert):
        name = name.strip().rstrip(".").lower()
        if wanted_ip is not None:
            try:
                if ipaddress.ip_address(name) == wanted_ip:
                    return True
            except ValueError:
                continue
        elif name == wanted:
            return True
        elif name.startswith("*.") and "." in wanted:
            head, _, rest = wanted.partition(".")
            if head and rest == name[2:]:
                return True
    return False


# ------------------------------------------------------------------ revocation

@dataclass(frozen=True)
class Status:
    state: str  # good | revoked | undetermined | not checked
    detail: str


def _entry_status(parsed: ParsedCrl, entry: x509.RevokedCertificate, at: dt.datetime
                  ) -> Status | None:
    reason = "unspecified"
    with contextlib.suppress(x509.ExtensionNotFound):
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    if reason == "removeFromCRL":
        return None
    when = entry.revocation_date_utc
    if when > at:
        return None
    return Status("revoked", f"revoked {when:%Y-%m-%d %H:%M}Z, reason {reason} "
                             f"({_crl_name(parsed)})")


def _crl_name(parsed: ParsedCrl) -> str:
    try:
        number = parsed.crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        label = f"CRL {number}"
    except x509.ExtensionNotFound:
        label = "CRL"
    return f"{label} of {openssl_oneline(parsed.issuer)}" + (
        f" from {parsed.source}" if parsed.source else "")


def fast_crl_status(cert: x509.Certificate, issuer: x509.Certificate, crls: CrlSet,
                    at: dt.datetime) -> Status | None:
    """The answer of the issuer's plain CRLs, or None when pyhanko must judge (no CRL, a CRL
    that is not plain, or one not signed by the issuer's key in the path)."""
    candidates = crls.for_issuer(cert.issuer)
    if not candidates or not all(c.plain for c in candidates):
        return None
    if not all(crls.signed_by(c, issuer) for c in candidates):
        return None
    if not _may_sign_crls(issuer):
        return None  # pyhanko says why (keyUsage without cRLSign)
    # RFC 5280 5.3: a CRL with a critical entry extension one cannot process must not be
    # used for any certificate (OpenSSL agrees; pyhanko looks at the matching entry only)
    unusable = [c for c in candidates if not c.index().plain_entries]
    if unusable and len(unusable) == len(candidates):
        return Status("undetermined", f"{_crl_name(unusable[0])} has a critical entry "
                                      "extension pkiq cannot process (RFC 5280 5.3: such a "
                                      "CRL must not be used)")
    current, expired = [], []
    for parsed in (c for c in candidates if c not in unusable):
        this, nxt = parsed.crl.last_update_utc, parsed.crl.next_update_utc
        if this > at:
            continue
        if nxt is not None and nxt <= at:
            expired.append(parsed)
        else:
            current.append(parsed)
    for parsed in current:
        entry = parsed.index().find(cert.serial_number)
        if entry is not None:
            status = _entry_status(parsed, entry, at)
            if status is not None:
                return status
    if current:
        return Status("good", f"not revoked ({_crl_name(current[0])}, next update "
                              f"{current[0].crl.next_update_utc:%Y-%m-%d %H:%M}Z)")
    if expired:
        newest = max(expired, key=lambda c: c.crl.next_update_utc)
        return Status("revoked", f"treated as revoked: {_crl_name(newest)} expired "
                                 f"{newest.crl.next_update_utc:%Y-%m-%d %H:%M}Z (an expired "
                                 "CRL revokes its CA's certificates, as Expressway treats it)")
    return None


def _may_sign_crls(issuer: x509.Certificate) -> bool:
    try:
        return issuer.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign
    except x509.ExtensionNotFound:
        return True


def _described(vpath):
    """pyhanko's state for one revocation check, naming the certificate "the certificate":
    left to itself it numbers from the anchor and calls an end-entity certificate found
    revoked by OCSP "the trust anchor" (each line of the path already says its role)."""
    from pyhanko_certvalidator._state import ValProcState
    from pyhanko_certvalidator.util import ConsList

    return ValProcState(cert_path_stack=ConsList.sing(vpath), ee_name_override="certificate",
                        init_index=vpath.pkix_len)


async def _pyhanko_crl_status(cert: x509.Certificate, cert_a, vpath, req: Request,
                              crls: CrlSet, path_issuers: set[x509.Name]) -> Status:
    from pyhanko_certvalidator import ValidationContext
    from pyhanko_certvalidator.errors import (
        CRLNoMatchesError,
        CRLValidationError,
        CRLValidationIndeterminateError,
        RevokedError,
    )
    from pyhanko_certvalidator.revinfo.validate_crl import verify_crl

    issuer_name = cert.issuer
    # the CRLs of the certificate's issuer, of the CRL issuers its distribution points name
    # (indirect CRLs), and of the path's CAs (a CRL signer's own status): pyhanko tries to
    # place every CRL it is given, which is slow and noisy with a whole store
    names = {name_key(n) for n in (issuer_name, *path_issuers, *_crl_issuer_names(cert))}
    relevant = [c.der for c in crls.crls if c.issuer_key in names]
    anchors, others = split_trusted(req.trusted)
    context = ValidationContext(
        trust_roots=_anchors(anchors),
        other_certs=[_to_asn1(c) for c in [*others, *req.intermediates]],
        crls=relevant, moment=req.at, allow_fetching=False,
        algorithm_usage_policy=_algorithms(),
        revinfo_policy=_crl_side_policy())
    try:
        await verify_crl(cert_a, vpath, context, proc_state=_described(vpath))
    except RevokedError as exc:
        return Status("revoked", _clean(exc))
    except CRLNoMatchesError:
        return Status("undetermined", "no CRL of its issuer is available")
    except CRLValidationIndeterminateError as exc:
        if exc.suspect_stale is not None:
            return Status("revoked", f"treated as revoked: the CRL expired ({_clean(exc)}; an "
                                     "expired CRL revokes its CA's certificates, as Expressway "
                                     "treats it)")
        return Status("undetermined", f"no usable CRL: {_clean(exc)}")
    except CRLValidationError as exc:
        return Status("undetermined", f"no usable CRL: {_clean(exc)}")
    return Status("good", "not revoked (CRL checked with full RFC 5280 section 6.3 rules)")


async def _ocsp_status(cert_a, vpath, req: Request, response: bytes) -> Status:
    from pyhanko_certvalidator import ValidationContext
    from pyhanko_certvalidator.errors import OCSPValidationError, RevokedError
    from pyhanko_certvalidator.revinfo.validate_ocsp import verify_ocsp_response

    anchors, others = split_trusted(req.trusted)
    context = ValidationContext(
        trust_roots=_anchors(anchors),
        other_certs=[_to_asn1(c) for c in [*others, *req.intermediates]],
        ocsps=[response], moment=req.at, allow_fetching=False,
        algorithm_usage_policy=_algorithms(),
        revinfo_policy=_no_revocation_policy())
    try:
        await verify_ocsp_response(cert_a, vpath, context, proc_state=_described(vpath))
    except RevokedError as exc:
        return Status("revoked", _clean(exc).replace("revoked", "revoked (OCSP)", 1))
    except OCSPValidationError as exc:
        return Status("undetermined", f"OCSP: {_clean(exc) or 'no matching response'}")
    except ValueError as exc:
        return Status("undetermined", f"OCSP: the response could not be read ({exc})")
    return Status("good", "not revoked (OCSP response good)")


def _crl_issuer_names(cert: x509.Certificate) -> list[x509.Name]:
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [name.value for point in cdp for name in point.crl_issuer or ()
            if isinstance(name, x509.DirectoryName)]


def ocsp_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        if desc.access_method == x509.AuthorityInformationAccessOID.OCSP and isinstance(
                desc.access_location, x509.UniformResourceIdentifier):
            return desc.access_location.value
    return None


def cdp_urls(cert: x509.Certificate) -> list[str]:
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [name.value for point in cdp for name in point.full_name or ()
            if isinstance(name, x509.UniformResourceIdentifier)]


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """An RFC 6960 request for one certificate, SHA-1 CertID (what every responder takes)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


async def _revocation(path: Path, req: Request, crls: CrlSet,
                      ocsp_responses: dict[str, bytes]) -> list[Status]:
    """One status per certificate of the path below the anchor, leaf first."""
    s = req.settings
    out: list[Status] = []
    vpath = path.validation_path
    asn1_path = list(vpath.iter_certs(include_root=True))[::-1] if vpath is not None else []
    for position, cert in enumerate(path.certs[:-1]):
        issuer = path.certs[position + 1]
        status = None
        if s.use_ocsp:
            response = ocsp_responses.get(cert.fingerprint(hashes.SHA256()).hex())
            if response is not None:
                status = await _ocsp_status(asn1_path[position], vpath, req, response)
                if status.state == "undetermined" and not s.use_crls:
                    out.append(status)
                    continue
                if status.state != "undetermined":
                    out.append(status)
                    continue
        ocsp_note = status
        if s.use_crls:
            status = fast_crl_status(cert, issuer, crls, req.at)
            if status is None:
                status = await _pyhanko_crl_status(cert, asn1_path[position], vpath, req,
                                                   crls, {c.issuer for c in path.certs})
            if ocsp_note is not None and status.state == "undetermined":
                status = Status("undetermined", f"{ocsp_note.detail}; {status.detail}")
        elif status is None:
            url = ocsp_url(cert)
            status = Status("undetermined",
                            f"the OCSP responder {url} gave no answer, and CRLs are not used"
                            if url else "no OCSP responder named in the certificate, and "
                            "CRLs are not used")
        out.append(status)
    return out


def check(req: Request, crls: CrlSet | None = None,
          ocsp_responses: dict[str, bytes] | None = None, path: Path | None = None
          ) -> Verdict:
    """The verdict and one line per certificate. ``ocsp_responses``: DER responses by the
    certificate's SHA-256, as the use case fetched them; ``path``: from ``find_path``."""
    with _lenient():
        return asyncio.run(_check(req, crls or CrlSet(), ocsp_responses or {}, path))


def find_path(req: Request) -> Path:
    """The path alone (for the use case to know which certificates need CDP downloads or
    OCSP before the check)."""
    with _lenient():
        return asyncio.run(_build_and_validate(req))


async def _check(req: Request, crls: CrlSet, ocsp_responses: dict[str, bytes],
                 path: Path | None) -> Verdict:
    path = path or await _build_and_validate(req)
    s = req.settings
    checking = s.use_ocsp or s.use_crls
    statuses: list[Status] = []
    if path.problem is None and checking:
        statuses = await _revocation(path, req, crls, ocsp_responses)
    lines = []
    n = len(path.certs)
    for position, cert in enumerate(path.certs):
        anchor = path.anchored and position == n - 1
        role = "trust anchor" if anchor else "end-entity" if position == 0 else "intermediate"
        subject = openssl_oneline(cert.subject)
        sha = cert.fingerprint(hashes.SHA256()).hex()
        if path.problem is not None:
            at, rule = path.problem
            if position == at:
                lines.append(CertLine(position, role, subject, sha, "invalid", rule))
            elif position > at:
                lines.append(CertLine(position, role, subject, sha, "ok",
                                      _good_text(cert, req, anchor)))
            else:
                lines.append(CertLine(position, role, subject, sha, "unchecked",
                                      "not checked: the path breaks above it"))
            continue
        if anchor:
            lines.append(CertLine(position, role, subject, sha, "ok",
                                  _good_text(cert, req, True)))
            continue
        if not checking:
            status = Status("not checked", "revocation not checked (OCSP and CRLs are off)")
        else:
            status = statuses[position]
        state = {"good": "ok", "not checked": "ok", "revoked": "revoked"}.get(
            status.state, "undetermined")
        if state == "undetermined" and s.fallback == "not-revoked":
            detail = (f"{_good_text(cert, req, False)}; revocation undetermined "
                      f"({status.detail}): treated as not revoked (fallback)")
            state = "ok"
        elif state == "undetermined":
            detail = f"revocation undetermined ({status.detail}): fallback treats it as revoked"
        elif state == "revoked":
            detail = status.detail
        else:
            detail = f"{_good_text(cert, req, False)}; {status.detail}"
        lines.append(CertLine(position, role, subject, sha, state, detail, status.state))
    return _verdict(lines, path, req)


def _verdict(lines: list[CertLine], path: Path, req: Request) -> Verdict:
    at = req.at
    if path.problem is not None:
        position, rule = path.problem
        return Verdict("invalid", f"certificate {position}: {rule}", tuple(lines), at,
                       req.settings)
    revoked = [line for line in lines if line.state == "revoked"]
    if revoked:
        return Verdict("invalid", f"certificate {revoked[0].position} is revoked",
                       tuple(lines), at, req.settings)
    unknown = [line for line in lines if line.state == "undetermined"]
    if unknown:
        return Verdict("undetermined", f"the revocation status of certificate "
                                       f"{unknown[0].position} cannot be established and the "
                                       "fallback treats it as revoked", tuple(lines), at,
                       req.settings)
    return Verdict("valid", "the path is valid and no certificate in it is revoked",
                   tuple(lines), at, req.settings)


def _good_text(cert: x509.Certificate, req: Request, anchor: bool) -> str:
    valid = (f"valid {cert.not_valid_before_utc:%Y-%m-%d} to "
             f"{cert.not_valid_after_utc:%Y-%m-%d}")
    if anchor:
        return f"trust anchor from the trusted CA list, {valid}"
    parts = [f"signature, names and constraints good, {valid}"]
    if cert is req.cert or cert == req.cert:
        if req.purpose:
            parts.append(f"{req.purpose} allowed")
        if req.host:
            parts.append(f"{req.host} matches CN or SAN")
    return ", ".join(parts)
