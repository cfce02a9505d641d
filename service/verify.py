"""``pkiq verify``'s use case: would a node (or a trusted list given as files) accept this
certificate tonight? Gathers the trusted list and CRLs, downloads what the Expressway would
download (CRLs from the certificates' distribution points, OCSP answers), and asks
``ca.verify`` for the verdict.

CRLs are parsed once per ``CrlCache`` (files by path, size and mtime; pkiq's own CRL rows by
id, which never change): the CLI makes one per run, the web app and the benchmark keep
one, so a node's million-entry CRL is indexed once and each later check is a lookup.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ca import nodes
from ca import verify as domain
from ca.crl_config import check_url
from ca.errors import BadInput
from ca.store_material import Catalogue, crl_ders
from ca.verify import CrlSet, ParsedCrl, RevocationSettings, Verdict

from .context import ServiceContext

log = logging.getLogger("pkiq.verify")
OCSP_TIMEOUT = (5.0, 10.0)  # connect, read: an Expressway does not wait long either
OCSP_TOTAL_SECONDS = 15.0  # the whole answer, however slowly it drips
OCSP_MAX_BYTES = 1 << 20


@dataclass
class CrlCache:
    """Parsed CRLs kept between checks (see the module's docstring)."""

    files: dict[tuple, list[ParsedCrl]] = field(default_factory=dict)
    rows: dict[tuple[str, int], ParsedCrl] = field(default_factory=dict)
    sets: dict[tuple, CrlSet] = field(default_factory=dict)

    def file(self, path: Path) -> list[ParsedCrl]:
        try:
            st = path.stat()
        except OSError as exc:
            raise BadInput(f"{path}: {exc.strerror or exc}") from None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self.files:
            self.files[key] = domain.parse_crls(_read(path), str(path))
        return self.files[key]

    def crl_set(self, parsed: list[ParsedCrl]) -> CrlSet:
        """One CrlSet per combination of CRLs: its signature checks are remembered too."""
        key = tuple(id(p) for p in parsed)
        if key not in self.sets:
            self.sets[key] = CrlSet(parsed)
        return self.sets[key]


@dataclass(frozen=True)
class Check:
    """What is checked and how; the sources of trust come separately."""

    cert: bytes  # PEM or DER: the first certificate is checked, others serve as intermediates
    intermediates: tuple[bytes, ...] = ()
    at: dt.datetime | None = None
    purpose: str | None = None
    host: str | None = None
    settings: RevocationSettings = RevocationSettings()


@dataclass
class Outcome:
    verdict: Verdict
    notes: list[str]  # downloads made or failed, members of the trusted set missing
    source: str  # the node, or "files"

    def view(self) -> dict:
        return {**self.verdict.view(), "source": self.source, "notes": self.notes}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(f"{path}: {exc.strerror or exc}") from None


def _certs(check: Check) -> tuple[x509.Certificate, list[x509.Certificate]]:
    given = domain.load_certificates(check.cert, "the certificate to check")
    extra = [c for data in check.intermediates
             for c in domain.load_certificates(data, "an intermediate")]
    return given[0], [*given[1:], *extra]


def verify_files(check: Check, trusted: Sequence[Path], crl_files: Sequence[Path] = (),
                 *, now: dt.datetime, cache: CrlCache | None = None) -> Outcome:
    """Against a trusted list and CRLs given as files (what a node would hold)."""
    cache = cache or CrlCache()
    if not trusted:
        raise BadInput("give the trusted CA list: --node NODE, or --trusted FILE")
    _certs(check)  # the certificate's own problems first
    anchors = [c for path in trusted
               for c in domain.load_certificates(_read(path), str(path))]
    parsed = [p for path in crl_files for p in cache.file(path)]
    return _run(check, anchors, cache.crl_set(parsed), now, [], "files")


def verify_node(ctx: ServiceContext, fqdn: str, check: Check,
                cache: CrlCache | None = None) -> Outcome:
    """Against a node's trusted CA list and the CRLs pkiq publishes in its store: its own
    CAs' latest CRL and the installed CRLs of other CAs (expired ones too: an Expressway
    holding an expired CRL treats the CA's certificates as revoked, and says so here)."""
    cache = cache or CrlCache()
    now = ctx.clock()
    with ctx.read_transaction() as session:
        node = nodes.get_node(session, fqdn)
        catalogue = Catalogue.load(session)
        trusted, missing = catalogue.trusted_for(node)
        refs = list(dict.fromkeys(r for cert in trusted for r in catalogue.crls_for(cert)))
        wanted = [r for r in refs if (r.origin, r.row_id) not in cache.rows]
        for ref, der in zip(wanted, crl_ders(session, wanted), strict=True):
            for parsed in domain.parse_crls(der, f"{ref.origin} CRL #{ref.row_id}"):
                cache.rows[(ref.origin, ref.row_id)] = parsed
        name = node.fqdn
    parsed = [cache.rows[(r.origin, r.row_id)] for r in refs if (r.origin, r.row_id)
              in cache.rows]
    notes = [f"trusted set member missing: {m}" for m in missing]
    return _run(check, trusted, cache.crl_set(parsed), now, notes, f"node {name}")


def _run(check: Check, trusted: list[x509.Certificate], crls: CrlSet, now: dt.datetime,
         notes: list[str], source: str) -> Outcome:
    cert, intermediates = _certs(check)
    request = domain.Request(cert, tuple(trusted), tuple(intermediates), check.at or now,
                             check.purpose, check.host, check.settings)
    path = domain.find_path(request)
    responses: dict[str, bytes] = {}
    if path.problem is None:
        crls = _download_crls(path, request, crls, notes)
        responses = _fetch_ocsp(path, request, notes)
    return Outcome(domain.check(request, crls, responses, path=path), notes, source)


def _download_crls(path: domain.Path, request: domain.Request, crls: CrlSet,
                   notes: list[str]) -> CrlSet:
    """Expressway's "Allow CRL downloads from CDPs": for a certificate whose issuer has no
    CRL at hand, the CRLs its distribution points name (through the one fetcher pkiq has
    for distribution points: HTTP(S) only, bounded in time and size)."""
    s = request.settings
    if not (s.use_crls and s.cdp_downloads):
        return crls
    urls = []
    for cert in path.certs[:-1]:
        if not crls.for_issuer(cert.issuer):
            urls += [u for u in domain.cdp_urls(cert) if u not in urls]
    if not urls:
        return crls
    from scheduler.fetch import FetchLimits, Validator, fetch_all

    extended = CrlSet(crls.crls)
    limits = FetchLimits(total_timeout=20.0, retries=0)
    for result in fetch_all([(u, Validator()) for u in urls], limits=limits):
        if result.outcome != "fetched" or result.body is None:
            notes.append(f"CDP download {result.url}: {result.error or result.outcome}")
            continue
        try:
            extended.add(domain.parse_crls(result.body, result.url))
            notes.append(f"CDP download {result.url}: fetched")
        except BadInput as exc:
            notes.append(f"CDP download {result.url}: {exc}")
    return extended


def _fetch_ocsp(path: domain.Path, request: domain.Request, notes: list[str]
                ) -> dict[str, bytes]:
    """Expressway's "Use OCSP": one POST (RFC 6960 appendix A) to the responder a
    certificate names; a failure leaves the CRLs or the fallback to answer."""
    if not request.settings.use_ocsp:
        return {}
    import requests

    out: dict[str, bytes] = {}
    for position, cert in enumerate(path.certs[:-1]):
        url = domain.ocsp_url(cert)
        if url is None:
            continue
        try:
            check_url(url)
            body = domain.ocsp_request(cert, path.certs[position + 1])
            status, content = _post_ocsp(url, body)
            if status != 200:
                notes.append(f"OCSP {url}: HTTP {status}")
                continue
            out[cert.fingerprint(hashes.SHA256()).hex()] = content
            notes.append(f"OCSP {url}: answered")
        except BadInput as exc:
            notes.append(f"OCSP {url}: {exc}")
        except requests.RequestException as exc:
            notes.append(f"OCSP {url}: {type(exc).__name__}")
    return out


def _post_ocsp(url: str, body: bytes) -> tuple[int, bytes]:
    """POST one OCSP request; (HTTP status, answer). The answer is read in pieces and given
    up past ``OCSP_MAX_BYTES`` or ``OCSP_TOTAL_SECONDS`` (BadInput): the URL comes from the
    certificate being checked, so the responder may be anyone's, and ``requests`` would
    otherwise read an endless body whole, a byte every few seconds."""
    import time

    import requests
    import urllib3

    deadline = time.monotonic() + OCSP_TOTAL_SECONDS
    with requests.Session() as session:
        session.trust_env = False
        with session.post(url, data=body, timeout=OCSP_TIMEOUT, allow_redirects=False,
                          stream=True,
                          headers={"Content-Type": "application/ocsp-request"}) as answer:
            if answer.status_code != 200:
                return answer.status_code, b""
            declared = answer.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > OCSP_MAX_BYTES:
                raise BadInput(f"answer larger than {OCSP_MAX_BYTES} bytes")
            content = bytearray()
            try:
                while piece := answer.raw.read1(16384):  # one socket read at a time
                    content += piece
                    if len(content) > OCSP_MAX_BYTES:
                        raise BadInput(f"answer larger than {OCSP_MAX_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise BadInput(f"no whole answer within {OCSP_TOTAL_SECONDS:g} s")
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise BadInput(f"the answer broke off after {len(content)} bytes "
                               f"({type(exc).__name__})") from None
            return 200, bytes(content)
