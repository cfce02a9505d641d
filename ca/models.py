"""The CA database: OpenSSL's index.txt, serial and crlnumber as SQL tables.

| OpenSSL demoCA              | here                                          |
|-----------------------------|-----------------------------------------------|
| cacert.pem, private/cakey   | certificate_authorities.cert_der / key_pem    |
| serial                      | certificate_authorities.next_serial (hex)     |
| crlnumber                   | certificate_authorities.crl_number (last used)|
| index.txt rows V/R/E        | certificates.status                           |
| index.txt.attr unique_subject | certificates.active_subject (subject hash), unique |
| newcerts/SERIAL.pem         | certificates.der                              |
| crl.pem                     | crls                                          |
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the CA database; pass UTC-aware times")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class CertificateAuthority(Base):
    __tablename__ = "certificate_authorities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("certificate_authorities.id"))
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    key_pem: Mapped[str] = mapped_column(Text)  # PKCS#8, PBES2 AES-256: never clear
    # One CA per key: a key adopted twice would hand out the same serials and CRL numbers.
    spki_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    key_type: Mapped[str] = mapped_column(String(16))
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # OpenSSL [ CA_default ] settings
    policy: Mapped[dict] = mapped_column(JSON)
    copy_extensions: Mapped[str] = mapped_column(String(8), default="copy")
    unique_subject: Mapped[bool] = mapped_column(Boolean, default=False)
    default_days: Mapped[int] = mapped_column(Integer, default=365)
    profile_days: Mapped[dict] = mapped_column(JSON, default=dict)
    crl_hours: Mapped[int] = mapped_column(Integer, default=168)
    crl_include_expired: Mapped[bool] = mapped_column(Boolean, default=True)
    clock_skew_seconds: Mapped[int] = mapped_column(Integer, default=300)
    serial_mode: Mapped[str] = mapped_column(String(12), default="random")
    next_serial: Mapped[str] = mapped_column(String(42), default="01")
    crl_number: Mapped[int] = mapped_column(BigInteger, default=0)  # last one used; 0 = none
    crl_urls: Mapped[list] = mapped_column(JSON, default=list)
    ca_issuers_urls: Mapped[list] = mapped_column(JSON, default=list)
    ocsp_urls: Mapped[list] = mapped_column(JSON, default=list)
    approval: Mapped[str] = mapped_column(String(8), default="auto",
                                          server_default="auto")  # auto | manual
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Handed over to `openssl ca` (export-openssl --handover): from then on openssl owns the
    # index, serial and crlnumber, and pkiq neither signs with the CA nor renews its CRL.
    handed_over_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    handed_over_to: Mapped[str | None] = mapped_column(Text)
    # Bumped by every revocation and hold release, in its transaction: what an OCSP
    # responder's cache compares to see a status change made by any process (ca.ocsp).
    status_generation: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    parent: Mapped[CertificateAuthority | None] = relationship(remote_side=[id])

    def __repr__(self) -> str:
        return f"CertificateAuthority(name={self.name!r}, subject={self.subject!r})"


class Certificate(Base):
    """One index.txt row, plus the certificate itself."""

    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("ca_id", "serial", name="uq_certificates_ca_serial"),
        # NULLs are distinct: only valid certificates of unique_subject CAs take part.
        UniqueConstraint("ca_id", "active_subject", name="uq_certificates_ca_active_subject"),
        Index("ix_certificates_ca_status", "ca_id", "status"),
        Index("ix_certificates_serial", "serial"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authorities.id"))
    serial: Mapped[str] = mapped_column(String(42))  # upper-case hex, even length (OpenSSL)
    status: Mapped[str] = mapped_column(String(1))  # V valid, R revoked, E expired
    subject: Mapped[str] = mapped_column(Text)  # OpenSSL one-line form
    # SHA-256 of ``subject`` while the entry is valid under unique_subject, else NULL; a hash
    # keeps the unique index small whatever the DN's length (PostgreSQL caps btree rows).
    active_subject: Mapped[str | None] = mapped_column(String(64))
    not_before: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revocation_reason: Mapped[str | None] = mapped_column(String(24))
    invalidity_date: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    profile: Mapped[str | None] = mapped_column(String(32))
    der: Mapped[bytes | None] = mapped_column(LargeBinary)  # None: imported without newcerts/
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    ca: Mapped[CertificateAuthority] = relationship()


class Crl(Base):
    __tablename__ = "crls"
    __table_args__ = (UniqueConstraint("ca_id", "number", name="uq_crls_ca_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authorities.id"))
    number: Mapped[int] = mapped_column(BigInteger)
    this_update: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    next_update: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    entries: Mapped[int] = mapped_column(Integer)
    der: Mapped[bytes] = mapped_column(LargeBinary)


class OcspResponder(Base):
    """A delegated OCSP responder certificate of a CA (RFC 6960 section 4.2.2.2) and its
    key, encrypted at rest under the CA passphrase as the CA's own key is."""

    __tablename__ = "ocsp_responders"
    __table_args__ = (UniqueConstraint("ca_id", "serial", name="uq_ocsp_responders_serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authorities.id"))
    serial: Mapped[str] = mapped_column(String(42))
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    key_pem: Mapped[str] = mapped_column(Text)  # PKCS#8, PBES2 AES-256: never clear
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class OcspInvalidation(Base):
    """Which serial's status changed at which ``status_generation`` of its CA: a responder
    that saw generation g drops the cached answers of the serials of g+1.. only."""

    __tablename__ = "ocsp_invalidations"
    __table_args__ = (Index("ix_ocsp_invalidations_ca_generation", "ca_id", "generation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authorities.id"))
    generation: Mapped[int] = mapped_column(BigInteger)
    serial: Mapped[str] = mapped_column(String(42))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class SigningJob(Base):
    """One queued signing request. The database is the queue's source of truth: a broker
    message carries only the job id, so a lost or repeated message changes nothing."""

    __tablename__ = "signing_jobs"
    __table_args__ = (
        # Submitting the same request for the same CA and profile again finds this job.
        UniqueConstraint("ca_id", "profile", "csr_sha256", name="uq_signing_jobs_request"),
        Index("ix_signing_jobs_state_updated", "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authorities.id"))
    profile: Mapped[str] = mapped_column(String(32))
    days: Mapped[int | None] = mapped_column(Integer)
    node: Mapped[str | None] = mapped_column(String(255))
    requester: Mapped[str] = mapped_column(String(255))
    csr_der: Mapped[bytes] = mapped_column(LargeBinary)
    csr_sha256: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    serial: Mapped[str | None] = mapped_column(String(42))
    decided_by: Mapped[str | None] = mapped_column(String(255))
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    ca: Mapped[CertificateAuthority] = relationship()


# ---------------------------------------------------------------- the CRL updater

class TrustedCa(Base):
    """One entry of the trusted CA list: the anchors fetched CRLs are validated against (and
    what the stores publish as the Expressway's trusted CA list)."""

    __tablename__ = "trusted_cas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)  # fingerprint of the DER
    subject: Mapped[str] = mapped_column(Text)  # OpenSSL one-line form
    issuer: Mapped[str] = mapped_column(Text)
    # SHA-256 of the subject's DER: how a CRL's issuer finds its anchor.
    subject_key: Mapped[str] = mapped_column(String(64), index=True)
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    origin: Mapped[str] = mapped_column(String(12))  # default (a pkiq CA) | uploaded
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class CrlSettings(Base):
    """The guide's CRL management page, one row (id 1). Beat reads it on every tick, so a
    change takes effect without a restart."""

    __tablename__ = "crl_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    update_time: Mapped[str] = mapped_column(String(5))  # HH:MM, UTC
    spread_seconds: Mapped[int] = mapped_column(Integer)  # random delay after update_time
    seed: Mapped[str] = mapped_column(String(32))  # picks this installation's delay
    use_cdp: Mapped[bool] = mapped_column(Boolean)  # also fetch the trusted CAs' CDP URLs
    timeout_seconds: Mapped[int] = mapped_column(Integer)  # per fetch, whole download
    max_bytes: Mapped[int] = mapped_column(BigInteger)
    parallelism: Mapped[int] = mapped_column(Integer)
    skew_seconds: Mapped[int] = mapped_column(Integer)  # thisUpdate may be this far ahead
    warn_hours: Mapped[int] = mapped_column(Integer)  # alert this close to nextUpdate
    overlap_hours: Mapped[int] = mapped_column(Integer)  # own CRLs renewed this close
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class DistributionPoint(Base):
    """A configured HTTP(S) URL, and what its last fetches said."""

    __tablename__ = "crl_distribution_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    origin: Mapped[str] = mapped_column(String(12))  # configured | cdp (from a trusted CA)
    etag: Mapped[str | None] = mapped_column(String(512))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    http_status: Mapped[int | None] = mapped_column(Integer)
    bytes_received: Mapped[int | None] = mapped_column(BigInteger)
    crls_found: Mapped[int | None] = mapped_column(Integer)
    issuers: Mapped[list] = mapped_column(JSON, default=list)  # issuer keys it last served
    # What it is known to serve: [issuer_key, scope_key or None (any scope)] pairs, learned
    # at its first success or from the trusted CA whose CDP names it (scheduler.refresh).
    serves: Mapped[list | None] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class InstalledCrl(Base):
    """A CRL from outside, fetched or uploaded. Per issuer, scope (its issuingDistribution-
    Point, ca.crl_scope) and origin one row is current; the rest is history. A fetched CRL
    overrides the manual one of its scope once it is newer."""

    __tablename__ = "installed_crls"
    __table_args__ = (
        Index("ix_installed_crls_issuer_current", "issuer_key", "current"),
        # One current CRL per issuer, scope and origin, even when two uploads race.
        Index("uq_installed_crls_one_current", "issuer_key", "scope_key", "origin",
              unique=True, sqlite_where=text("current"), postgresql_where=text("current")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer_key: Mapped[str] = mapped_column(String(64))  # trust.name_key of the issuer
    issuer: Mapped[str] = mapped_column(Text)  # OpenSSL one-line form
    scope: Mapped[str] = mapped_column(Text)  # ca.crl_scope text: "complete" or the IDP's
    scope_key: Mapped[str] = mapped_column(String(64))  # SHA-256 of ``scope``
    origin: Mapped[str] = mapped_column(String(8))  # fetched | manual
    source: Mapped[str | None] = mapped_column(String(2048))  # URL or file name
    number: Mapped[str | None] = mapped_column(String(50))  # decimal: numbers reach 2^159
    this_update: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    next_update: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    entries: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # The DER is in InstalledCrlChunk (ca.crl_install.stored_der reads it back).
    current: Mapped[bool] = mapped_column(Boolean)
    installed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    replaced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Why this CRL was taken against the rules (an upload with --force over a newer one).
    note: Mapped[str | None] = mapped_column(Text)


class InstalledCrlChunk(Base):
    """An installed CRL's DER in pieces (ca.crl_install.CHUNK bytes, the last shorter), so
    that no statement binds a whole CRL of tens of MB: the driver and SQLite would each copy
    it. No foreign key: SQLite (foreign_keys on) would empty or refuse this table whenever a
    migration rebuilds installed_crls; ca.crl_install writes and deletes both together."""

    __tablename__ = "installed_crl_chunks"

    crl_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # installed_crls.id
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class CrlIssuerStatus(Base):
    """Per issuer: the last attempt to install a CRL and why it failed, if it did."""

    __tablename__ = "crl_issuer_status"

    issuer_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    issuer: Mapped[str] = mapped_column(Text)
    last_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(2048))


# ---------------------------------------------------------------- Expressway nodes and stores

class TrustedSet(Base):
    """A named trusted CA list for nodes: pkiq CAs (by name, with their chains) and entries
    of the trusted CA list (by fingerprint). Members are kept by name and fingerprint, not
    by row, so a CA removed from the list shows up as a coverage gap, not a silent drop."""

    __tablename__ = "trusted_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    members: Mapped[list] = mapped_column(JSON, default=list)  # {"ca": name} | {"sha256": fp}
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ExpresswayCluster(Base):
    __tablename__ = "expressway_clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    fqdn: Mapped[str] = mapped_column(String(253))
    model: Mapped[str] = mapped_column(String(20))  # ca.expressway.MODELS, clustered ones
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ExpresswayNode(Base):
    """One Expressway peer: its names (the guide's Generate CSR page), the trusted CA list it
    should hold, where its store is written, and how its last publication went."""

    __tablename__ = "expressway_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fqdn: Mapped[str] = mapped_column(String(253), unique=True)
    role: Mapped[str] = mapped_column(String(1))  # C | E
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("expressway_clusters.id"))
    chat_node_aliases: Mapped[list] = mapped_column(JSON, default=list)
    phone_security_profiles: Mapped[list] = mapped_column(JSON, default=list)
    uc_domains: Mapped[list] = mapped_column(JSON, default=list)
    uc_domain_format: Mapped[str] = mapped_column(String(12), default="collab-edge")
    trusted_set_id: Mapped[int | None] = mapped_column(ForeignKey("trusted_sets.id"))
    store_dir: Mapped[str | None] = mapped_column(Text)  # None: <data dir>/stores/<fqdn>
    keep_generations: Mapped[int] = mapped_column(Integer, default=5)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # publishing: what is due and how the last attempt went
    publish_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    publish_reason: Mapped[str | None] = mapped_column(Text)
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    published_generation: Mapped[int | None] = mapped_column(Integer)
    published_digest: Mapped[str | None] = mapped_column(String(64))  # the store's content
    published_inputs: Mapped[str | None] = mapped_column(String(64))  # what it was made of
    publish_error: Mapped[str | None] = mapped_column(Text)
    coverage_gaps: Mapped[list] = mapped_column(JSON, default=list)

    cluster: Mapped[ExpresswayCluster | None] = relationship()
    trusted_set: Mapped[TrustedSet | None] = relationship()


class NodeCredential(Base):
    """A node's server key and certificate. ``pending``: a CSR in progress (the guide: one
    at a time per peer); ``active``: what the store publishes; ``retired`` / ``discarded``:
    history. The key is PKCS#8 under the service passphrase, like CA keys; only the store's
    privkey.pem holds it in clear, because Expressway demands that."""

    __tablename__ = "node_credentials"
    __table_args__ = (
        Index("uq_node_credentials_one_pending", "node_id", unique=True,
              sqlite_where=text("state = 'pending'"),
              postgresql_where=text("state = 'pending'")),
        Index("uq_node_credentials_one_active", "node_id", unique=True,
              sqlite_where=text("state = 'active'"),
              postgresql_where=text("state = 'active'")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("expressway_nodes.id"), index=True)
    state: Mapped[str] = mapped_column(String(10))  # pending | active | retired | discarded
    source: Mapped[str] = mapped_column(String(10))  # generated | uploaded
    key_type: Mapped[str] = mapped_column(String(16))
    key_pem: Mapped[str] = mapped_column(Text)  # PKCS#8, PBES2 AES-256: never clear
    spki_sha256: Mapped[str] = mapped_column(String(64))
    csr_der: Mapped[bytes | None] = mapped_column(LargeBinary)
    cert_der: Mapped[bytes | None] = mapped_column(LargeBinary)
    chain_pem: Mapped[str | None] = mapped_column(Text)  # what came with an uploaded cert
    job_id: Mapped[int | None] = mapped_column(ForeignKey("signing_jobs.id"))
    warnings: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    node: Mapped[ExpresswayNode] = relationship()


# ---------------------------------------------------------------- Expressway REST pushes

class NodeApi(Base):
    """How pkiq reaches one node's REST API: where (the node's FQDN names it in TLS; an
    address may say where to connect), who (the administrator, password sealed under the
    service passphrase or read from a file), how its HTTPS certificate is trusted (the
    node's trusted list plus the system CAs, or a pinned SHA-256), which endpoint names its
    release uses, and what the last drift check found."""

    __tablename__ = "node_apis"

    node_id: Mapped[int] = mapped_column(ForeignKey("expressway_nodes.id"), primary_key=True)
    address: Mapped[str | None] = mapped_column(String(253))  # None: the node's FQDN
    port: Mapped[int] = mapped_column(Integer, default=443)
    username: Mapped[str | None] = mapped_column(String(128))
    password_sealed: Mapped[str | None] = mapped_column(Text)  # ca.sealed; never clear
    credentials_file: Mapped[str | None] = mapped_column(Text)  # USER:PASSWORD, first line
    pin_sha256: Mapped[str | None] = mapped_column(String(64))
    release: Mapped[str] = mapped_column(String(16), default="x8.10")
    endpoints: Mapped[dict] = mapped_column(JSON, default=dict)  # overrides of the release's
    crl_fetch_hours: Mapped[int] = mapped_column(Integer, default=26)  # 0: not checked
    # SHA-256 of the CAs pkiq put on (or verified on) the node's trusted list: one the
    # node's store no longer holds is removed at the next push; others are left alone.
    managed_cas: Mapped[list] = mapped_column(JSON, default=list)
    # The node refused these credentials (401): the drift check does not send them again
    # (an account lockout) until ``node api set`` changes them.
    auth_refused_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    drift: Mapped[list] = mapped_column(JSON, default=list)  # ca.expressway_api.Finding views
    drift_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    node: Mapped[ExpresswayNode] = relationship()


class BundleFetch(Base):
    """When a node last fetched its CRL bundle from pkiq's web app (drift: an Expressway
    whose automatic CRL update stopped keeps checking against stale CRLs, silently)."""

    __tablename__ = "bundle_fetches"

    node_id: Mapped[int] = mapped_column(ForeignKey("expressway_nodes.id"), primary_key=True)
    fetched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    remote: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(String(300))
    count: Mapped[int] = mapped_column(Integer, default=0)


class Rollout(Base):
    """Publishing to a cluster's peers (or one node) over REST, one peer at a time: the
    first is verified (read-back and a TLS handshake) before the next is touched; a failure
    stops the rollout where it is, and ``--resume`` goes on from there. One open rollout per
    target."""

    __tablename__ = "rollouts"
    __table_args__ = (
        Index("uq_rollouts_one_open", "target", unique=True,
              sqlite_where=text("state NOT IN ('done', 'cancelled')"),
              postgresql_where=text("state NOT IN ('done', 'cancelled')")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(300))  # cluster:NAME | node:FQDN
    peers: Mapped[list] = mapped_column(JSON)  # FQDNs in rollout order
    position: Mapped[int] = mapped_column(Integer, default=0)  # index of the current peer
    # running | waiting (a retry is due at next_try_at) | paused (a restart is awaited)
    # | stopped (a failure) | done | cancelled
    state: Mapped[str] = mapped_column(String(10))
    restart: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[int | None] = mapped_column(Integer)  # the stopping error's exit code
    next_try_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class PushJob(Base):
    """One peer's push within a rollout: what it pushed (the store generation and its
    digest, the server certificate's fingerprint), how many attempts it took, and what the
    node answered. Never holds a key or a password."""

    __tablename__ = "push_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("expressway_nodes.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    # queued | running | retrying | done | failed | cancelled
    state: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int | None] = mapped_column(Integer)
    digest: Mapped[str | None] = mapped_column(String(64))
    server_sha256: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    # Who is pushing it now: a token per claim, so the outcome of a process whose push was
    # taken over (it looked dead) is dropped instead of moving the rollout on twice.
    claim: Mapped[str | None] = mapped_column(String(32))
    restarted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # once per job
    next_try_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    node: Mapped[ExpresswayNode] = relationship()


# ---------------------------------------------------------------- API tokens and the audit log

class ApiToken(Base):
    """A bearer token of the HTTP API: shown once, kept as its SHA-256 (a token is 256 random
    bits, so a fast hash loses nothing a slow one would protect), with a role and, if
    given, the CAs it may touch."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(10))  # requester | approver | admin
    cas: Mapped[list | None] = mapped_column(JSON)  # CA names; None: every CA
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to recognise it
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """One change, written in the transaction that made it: who (a token, or the OS user of
    a command, or a worker), through what, from where, what and with which data. Each row
    carries the SHA-256 of its content and of the row before it, so a row changed or removed
    afterwards breaks the chain (``pkiq audit verify``)."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    via: Mapped[str] = mapped_column(String(10))  # cli | api | worker | beat | web
    source: Mapped[str | None] = mapped_column(String(255))  # client address or host
    action: Mapped[str] = mapped_column(String(40), index=True)
    target: Mapped[str | None] = mapped_column(String(300), index=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's last link, one row, locked by every writer of the log: appends take
    turns even across hosts, so no two rows claim the same predecessor."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class IdempotentRequest(Base):
    """An API submit with an ``Idempotency-Key``: the same key (per token) and the same body
    get the same answer again, a different body with that key a 422."""

    __tablename__ = "idempotent_requests"

    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    answer: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
