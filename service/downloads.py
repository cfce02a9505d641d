"""The public downloads: each CA's certificate and its current CRL, as DER and as PEM, with
what an HTTP front end needs to answer conditional requests (an entity tag, a modification
time, and for a CRL how long a copy stays good). Nothing here is secret: these are the files
that certificates point to in their CRL distribution points and authority information
access (RFC 5280 sections 4.2.1.13 and 4.2.2.1)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca import authority
from ca.errors import NotFound
from ca.models import CertificateAuthority

from .context import ServiceContext

# RFC 5280 section 4.2.1.13 and 4.2.2.1: a DER CRL is application/pkix-crl and a DER
# certificate application/pkix-cert (RFC 2585 section 4). PEM text has no registered type of
# its own (RFC 7468 section 1); application/x-pem-file is what servers commonly send.
CRL_DER = "application/pkix-crl"
CERT_DER = "application/pkix-cert"
PEM = "application/x-pem-file"


@dataclass(frozen=True)
class Download:
    """One file as served. ``etag`` is a strong entity tag, quoted (RFC 9110 section
    8.8.3), from the SHA-256 of the body, so every process, and a restart, names the same
    bytes the same way. ``expires`` is a CRL's nextUpdate (None for a certificate)."""

    body: bytes
    media_type: str
    etag: str
    last_modified: dt.datetime
    filename: str
    expires: dt.datetime | None = None


def make_download(body: bytes, media_type: str, last_modified: dt.datetime, filename: str,
                  expires: dt.datetime | None = None) -> Download:
    """A ``Download`` with its entity tag computed from ``body``."""
    etag = f'"{hashlib.sha256(body).hexdigest()}"'
    return Download(body, media_type, etag, last_modified, filename, expires)


def ca_certificate(ctx: ServiceContext, name: str, *, pem: bool = False) -> Download:
    """CA ``name``'s certificate; Last-Modified is its notBefore (it never changes)."""
    with ctx.transaction() as session:
        ca = authority.get_ca(session, name)
        cert = authority.ca_certificate(ca)
    if pem:
        return make_download(cert.public_bytes(serialization.Encoding.PEM), PEM,
                             cert.not_valid_before_utc, f"{name}.pem")
    return make_download(cert.public_bytes(serialization.Encoding.DER), CERT_DER,
                         cert.not_valid_before_utc, f"{name}.crt")


def ca_crl(ctx: ServiceContext, name: str, *, pem: bool = False) -> Download:
    """CA ``name``'s newest CRL; Last-Modified is its thisUpdate. NotFound when the CA has
    issued none yet."""
    with ctx.transaction() as session:
        row = authority.latest_crl(session, authority.get_ca(session, name))
        if row is None:
            raise NotFound(f"CA {name!r} has issued no CRL yet: run pkiq ca gencrl {name}")
        der, this_update, next_update = row.der, row.this_update, row.next_update
    if pem:
        body = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
        return make_download(body, PEM, this_update, f"{name}.crl.pem", next_update)
    return make_download(der, CRL_DER, this_update, f"{name}.crl", next_update)


def ca_versions(ctx: ServiceContext) -> dict[str, Hashable]:
    """Per CA name, a value that changes whenever one of its downloads does: the row id (a
    CA made again under the same name) and the last CRL number used, which generate_crl
    raises in the transaction that stores the CRL. One small query however many CAs and
    CRLs there are, so a front end can ask it every second."""
    query = select(CertificateAuthority.name, CertificateAuthority.id,
                   CertificateAuthority.crl_number)
    with ctx.transaction() as session:
        return {name: (ca_id, number) for name, ca_id, number in session.execute(query)}
