"""What a node's store is made of: its trusted CA list, the CRL each of those CAs needs,
its server key and certificate — and the gaps, checked before anything is published.

"If a certificate authority's CRL expires, all certificates issued by that CA will be
treated as revoked" (the guide): so for every CA a node trusts, the store must carry a CRL
that stays valid for at least the headroom (by default longer than the day between two of
the node's automatic CRL updates). A CA without one is a gap: reported by ``pkiq node
check``, recorded with each publication, and alerted on.

The catalogue is read once per publishing run, without the CRLs themselves (they can be
tens of MB); each node's material is then worked out in memory, and only a node whose
inputs changed loads its CRLs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import crl_install
from .models import (
    CertificateAuthority,
    Crl,
    ExpresswayNode,
    InstalledCrl,
    NodeCredential,
    TrustedCa,
)
from .names import openssl_oneline
from .trust import fingerprint, name_key


@dataclass(frozen=True)
class CrlRef:
    """One CRL a store carries: pkiq's own (``crls`` row) or an installed one."""

    origin: str  # own | installed
    row_id: int
    issuer: str
    number: str | None
    scope: str
    this_update: dt.datetime
    next_update: dt.datetime


@dataclass(frozen=True)
class Gap:
    """A CA of the node's trusted list without a CRL valid for the headroom."""

    ca: str  # the CA's subject, OpenSSL one-line form
    fingerprint: str
    reason: str
    since: dt.datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.fingerprint}:{self.reason.split(':')[0]}"

    def view(self) -> dict:
        return {"ca": self.ca, "sha256": self.fingerprint, "reason": self.reason,
                "since": self.since.isoformat() if self.since else None}


@dataclass
class NodeMaterial:
    trusted: list[x509.Certificate]
    crls: list[CrlRef]
    gaps: list[Gap]
    missing: list[str]  # set members that no longer resolve
    credential: NodeCredential | None
    inputs: str = ""  # sha256 of everything above: equal inputs make an equal store


@dataclass
class _PkiqCa:
    row: CertificateAuthority
    chain: list[x509.Certificate]
    latest: CrlRef | None


@dataclass
class Catalogue:
    """pkiq's CAs, the trusted CA list and the CRLs in force, read once."""

    entries: list[tuple[str, x509.Certificate]] = field(default_factory=list)  # (sha256, cert)
    by_sha: dict[str, x509.Certificate] = field(default_factory=dict)
    cas: dict[str, _PkiqCa] = field(default_factory=dict)  # by CA name
    ca_by_sha: dict[str, _PkiqCa] = field(default_factory=dict)
    installed: dict[str, list[CrlRef]] = field(default_factory=dict)  # by issuer name key

    @classmethod
    def load(cls, session: Session) -> Catalogue:
        cat = cls()
        for row in session.scalars(select(TrustedCa).order_by(TrustedCa.id)):
            cert = x509.load_der_x509_certificate(row.der)
            cat.entries.append((row.sha256, cert))
            cat.by_sha[row.sha256] = cert
        latest = dict(session.execute(select(Crl.ca_id, func.max(Crl.number)).group_by(
            Crl.ca_id)).all())
        own: dict[int, CrlRef] = {}
        if latest:
            for row in session.execute(select(
                    Crl.id, Crl.ca_id, Crl.number, Crl.this_update, Crl.next_update).where(
                    Crl.ca_id.in_(list(latest)))):
                if row.number == latest[row.ca_id]:
                    own[row.ca_id] = (row.id, row.number, row.this_update, row.next_update)
        rows = {ca.id: ca for ca in session.scalars(select(CertificateAuthority))}
        for ca in rows.values():
            chain, current = [], ca
            while current is not None:
                chain.append(x509.load_der_x509_certificate(current.cert_der))
                current = rows.get(current.parent_id) if current.parent_id else None
            ref = None
            if ca.id in own:
                row_id, number, this_update, next_update = own[ca.id]
                ref = CrlRef("own", row_id, ca.subject, str(number), "complete", this_update,
                             next_update)
            entry = _PkiqCa(ca, chain, ref)
            cat.cas[ca.name] = entry
            cat.ca_by_sha[fingerprint(chain[0])] = entry
        for row in crl_install.installed(session):
            cat.installed.setdefault(row.issuer_key, []).append(CrlRef(
                "installed", row.id, row.issuer, row.number, row.scope, row.this_update,
                row.next_update))
        return cat

    def trusted_for(self, node: ExpresswayNode) -> tuple[list[x509.Certificate], list[str]]:
        """The node's trusted CA list, and the set members that no longer resolve. No set:
        pkiq's own CAs (the trusted list's default) and every entry of the trusted CA
        list."""
        if node.trusted_set is None:
            found = {fingerprint(ca.chain[0]): ca.chain[0] for ca in self.cas.values()}
            found.update((sha, cert) for sha, cert in self.entries)
            return list(found.values()), []
        return self.members(node.trusted_set.members)

    def members(self, members: list[dict]) -> tuple[list[x509.Certificate], list[str]]:
        """A trusted set's certificates (a pkiq CA with its chain up to the root: the guide
        asks a full chain of trust), and the members that no longer resolve."""
        found: dict[str, x509.Certificate] = {}
        missing: list[str] = []
        for member in members:
            if "ca" in member:
                ca = self.cas.get(member["ca"])
                if ca is None:
                    missing.append(f"pkiq CA {member['ca']!r} no longer exists")
                    continue
                certs = ca.chain
            else:
                cert = self.by_sha.get(member["sha256"])
                if cert is None:
                    missing.append(f"{member.get('subject', 'a CA')} (sha256 "
                                   f"{member['sha256'][:16]}...) is no longer in the trusted "
                                   "CA list")
                    continue
                certs = [cert]
            for cert in certs:
                found.setdefault(fingerprint(cert), cert)
        return list(found.values()), missing

    def crls_for(self, cert: x509.Certificate) -> list[CrlRef]:
        """pkiq's latest CRL for its own CAs; for others, every scope's CRL in force."""
        own = self.ca_by_sha.get(fingerprint(cert))
        if own is not None and own.latest is not None:
            return [own.latest]
        return list(self.installed.get(name_key(cert.subject), []))

    def issuing_chain(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The pkiq CA chain above a certificate pkiq issued (empty for one made elsewhere)."""
        for ca in self.cas.values():
            issuer = ca.chain[0]
            if issuer.subject == cert.issuer:
                try:
                    cert.verify_directly_issued_by(issuer)
                except (ValueError, TypeError, InvalidSignature):  # not this one
                    continue
                return list(ca.chain)
        return []

    def material(self, node: ExpresswayNode, credential: NodeCredential | None,
                 now: dt.datetime, headroom: dt.timedelta,
                 previous_gaps: list[dict] | None = None) -> NodeMaterial:
        trusted, missing = self.trusted_for(node)
        since = {g.get("key"): g.get("since") for g in previous_gaps or []}
        crls: list[CrlRef] = []
        gaps: list[Gap] = []
        for cert in trusted:
            subject = _oneline(cert)
            fp = fingerprint(cert)
            found = self.crls_for(cert)
            if not found:
                own = self.ca_by_sha.get(fp)
                reason = (f"no CRL: pkiq CA {own.row.name} has issued none yet (pkiq ca "
                          f"gencrl {own.row.name})" if own is not None else
                          "no CRL: none is installed for this CA (add its distribution "
                          "point with pkiq crl point add URL, or upload one)")
                gaps.append(_gap(subject, fp, reason, since, now))
                continue
            for ref in found:
                if ref.next_update <= now:
                    gaps.append(_gap(subject, fp, f"expired: CRL {ref.number} ({ref.scope}) "
                                 f"passed its nextUpdate {ref.next_update:%Y-%m-%d %H:%M}Z; "
                                 "left out of the store", since, now, ref.next_update))
                    continue
                crls.append(ref)
                if ref.next_update < now + headroom:
                    hours = (ref.next_update - now).total_seconds() / 3600
                    gaps.append(_gap(subject, fp, f"expiring: CRL {ref.number} ({ref.scope}) "
                                     f"is valid for {hours:.1f} more hours, less than the "
                                     f"headroom of {headroom.total_seconds() / 3600:g}",
                                     since, now, ref.next_update - headroom))
        for member in missing:  # a CA the node should trust and pkiq cannot give it
            gaps.append(_gap(member.split(" (")[0], hashlib.sha256(member.encode()).hexdigest(),
                             f"missing: {member}", since, now))
        crls.sort(key=lambda r: (r.issuer, r.scope, r.origin, r.row_id))
        material = NodeMaterial(trusted, crls, gaps, missing, credential)
        material.inputs = _inputs_key(node, material)
        return material


def _gap(subject: str, fp: str, reason: str, since: dict, now: dt.datetime,
         when: dt.datetime | None = None) -> Gap:
    gap = Gap(subject, fp, reason)
    known = since.get(gap.key)
    start = dt.datetime.fromisoformat(known) if known else (when if when and when < now
                                                             else now)
    return Gap(subject, fp, reason, start)


def _oneline(cert: x509.Certificate) -> str:
    return openssl_oneline(cert.subject)


def _inputs_key(node: ExpresswayNode, material: NodeMaterial) -> str:
    parts = [f"node:{node.fqdn}:{node.store_dir or ''}"]
    cred = material.credential
    if cred is not None:
        parts.append(f"cred:{cred.id}:{cred.spki_sha256}:"
                     f"{hashlib.sha256(cred.cert_der or b'').hexdigest()}:"
                     f"{hashlib.sha256((cred.chain_pem or '').encode()).hexdigest()}")
    parts += [f"ca:{c.fingerprint(hashes.SHA256()).hex()}" for c in material.trusted]
    parts += [f"crl:{r.origin}:{r.row_id}" for r in material.crls]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def crl_ders(session: Session, refs: list[CrlRef]) -> list[bytes]:
    """The CRLs themselves, for a store being written."""
    out = []
    for ref in refs:
        if ref.origin == "own":
            out.append(session.scalar(select(Crl.der).where(Crl.id == ref.row_id)))
        else:
            row = session.get(InstalledCrl, ref.row_id)
            out.append(crl_install.stored_der(session, row))
    return out
