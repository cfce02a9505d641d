"""The public downloads: each CA's certificate and its current CRL, as DER and as PEM, with
what an HTTP front end needs to answer conditional requests (an entity tag, a modification
time, and for a CRL how long a copy stays good). Nothing here is secret: these are the files
that certificates point to in their CRL distribution points and authority information
access (RFC 5280 sections 4.2.1.13 and 4.2.2.1)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Hashable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca import authority, nodes
from ca.bundles import BUNDLE_TYPES, crl_bundle
from ca.encoding import pem_blocks
from ca.errors import NotFound
from ca.models import CertificateAuthority
from ca.store_layout import MANIFEST
from shell.stores import NodeStore

from .context import ServiceContext
from .stores import store_root

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
    with ctx.read_transaction() as session:
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
    with ctx.read_transaction() as session:
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
    with ctx.read_transaction() as session:
        return {name: (ca_id, number) for name, ca_id, number in session.execute(query)}


# ---------------------------------------------------------------- node and cluster bundles

# What an Expressway's automatic CRL updates fetch ("the distribution point may point
# directly to a CRL file or to ZIP and GZIP archives containing CRL files"): the bundles of
# the node's published store, so only CRLs pkiq validated and checked for coverage.
BUNDLE_FILES = {"crls.zip": "zip", "crls.tar.gz": "tgz", "crls.pem": "pem"}


def store_versions(ctx: ServiceContext) -> dict[Hashable, Hashable]:
    """Per node (``("node", fqdn)``) what its store's ``current`` link points at, and per
    cluster (``("cluster", name)``) its peers': one query and a readlink per node."""
    with ctx.read_transaction() as session:
        rows = [(n.fqdn, n.cluster.name if n.cluster else None, store_root(ctx.settings, n))
                for n in nodes.list_nodes(session)]
    versions: dict[Hashable, Hashable] = {}
    clusters: dict[str, list] = {}
    for fqdn, cluster, root in rows:
        version = (str(root), NodeStore(root).version())
        versions[("node", fqdn)] = version
        if cluster is not None:
            clusters.setdefault(cluster, []).append((fqdn, version))
    for name, peers in clusters.items():
        versions[("cluster", name)] = tuple(sorted(peers))
    return versions


def _bundle_times(manifests: list[dict]) -> tuple[dt.datetime, dt.datetime | None]:
    crls = [c for m in manifests for c in m.get("crls", [])]
    this = [dt.datetime.fromisoformat(c["this_update"]) for c in crls]
    nxt = [dt.datetime.fromisoformat(c["next_update"])
           for c in crls if c.get("next_update")]
    published = [dt.datetime.fromisoformat(m["published_at"])
                 for m in manifests]
    return max(this or published), min(nxt) if nxt else None


def node_bundle(ctx: ServiceContext, fqdn: str, file_name: str) -> Download:
    """One of the node's CRL bundles, from its current store generation."""
    if file_name not in BUNDLE_FILES:
        raise NotFound(f"no bundle {file_name[:40]!r}: a node's bundles are "
                       f"{', '.join(BUNDLE_FILES)}")
    with ctx.read_transaction() as session:
        node = nodes.get_node(session, fqdn)
        root = store_root(ctx.settings, node)
    _generation, files = NodeStore(root).read_current([file_name, MANIFEST])
    if file_name not in files:
        raise NotFound(f"the store of {fqdn} holds no CRL yet: pkiq node check {fqdn}")
    manifest = json.loads(files[MANIFEST])
    last_modified, expires = _bundle_times([manifest])
    return make_download(files[file_name], BUNDLE_TYPES[BUNDLE_FILES[file_name]],
                         last_modified, f"{fqdn}-{file_name}", expires)


def cluster_bundle(ctx: ServiceContext, name: str, file_name: str) -> Download:
    """Every CRL any peer of the cluster carries, as one bundle: one URL for the whole
    cluster's automatic CRL updates."""
    if file_name not in BUNDLE_FILES:
        raise NotFound(f"no bundle {file_name[:40]!r}: a cluster's bundles are "
                       f"{', '.join(BUNDLE_FILES)}")
    with ctx.read_transaction() as session:
        cluster = nodes.get_cluster(session, name)
        roots = [store_root(ctx.settings, n) for n in nodes.cluster_nodes(session, cluster)]
    ders: list[bytes] = []
    manifests = []
    for root in roots:
        try:
            _generation, files = NodeStore(root).read_current(["crls.pem", MANIFEST])
        except NotFound:
            continue  # a peer not published yet adds nothing
        manifests.append(json.loads(files[MANIFEST]))
        ders += [block.der for block in pem_blocks(files.get("crls.pem", b""), ("X509 CRL",))]
    if not ders:
        raise NotFound(f"no peer of cluster {name} has published a CRL yet: pkiq node check")
    last_modified, expires = _bundle_times(manifests)
    kind = BUNDLE_FILES[file_name]
    return make_download(crl_bundle(ders, kind), BUNDLE_TYPES[kind], last_modified,
                         f"{name}-{file_name}", expires)
