"""The Expressway rules for one node's server certificate: the names it must carry, and the
key and request pkiq makes for it (``ca.server_upload`` checks one made elsewhere).

Sources: Cisco Expressway Certificate Creation and Use Deployment Guide (the X8 text in
shared/reference, and the X14 edition where it has moved on), RFC 6125 (host names in TLS
certificates), RFC 5280.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .csr import SAN_WARN_CHARS, check_key
from .errors import BadInput, PolicyViolation
from .general_names import check_dns_name, describe
from .keys import generate_key, signature_hash
from .names import checked_attribute

# ---------------------------------------------------------------- node names

# Cisco Expressway Cluster Creation and Maintenance Deployment Guide: up to 6 peers.
MAX_CLUSTER_PEERS = 6

ROLES = ("C", "E")  # Expressway-C (inside), Expressway-E (edge)
MODELS = ("standalone", "cluster-per-peer", "cluster-shared")
UC_DOMAIN_FORMATS = ("collab-edge", "domain")
_C_SECTION = "'Expressway-C server certificate requirements'"
_E_SECTION = "'Expressway-E server certificate requirements'"


@dataclass(frozen=True)
class NodeProfile:
    """What one Expressway node's certificate must name. ``peers`` are the other peers of
    its cluster (only a shared certificate lists them); the extras are the guide's
    "Server certificates and Unified Communications" names."""

    fqdn: str
    role: str  # "C" or "E"
    model: str = "standalone"
    cluster_fqdn: str | None = None
    peers: tuple[str, ...] = ()
    chat_node_aliases: tuple[str, ...] = ()  # C, and E for XMPP federation (the same set)
    phone_security_profiles: tuple[str, ...] = ()  # C only, in FQDN format
    uc_domains: tuple[str, ...] = ()  # E only
    uc_domain_format: str = "collab-edge"  # E: collab-edge.<domain>, or <domain> itself


def check_node_profile(p: NodeProfile) -> None:
    """Refuse a profile Expressway could not use: unknown role or model, a name that is no
    host name (wildcards included: "Expressway does not support wildcard certificates"),
    cluster names where there is no cluster or none where there is, and one role's
    Unified Communications names on the other role."""
    if p.role not in ROLES:
        raise BadInput(f"node role {p.role!r} is not C (Expressway-C) or E (Expressway-E)")
    if p.model not in MODELS:
        raise BadInput(f"deployment model {p.model!r} is unknown; choose one of "
                       f"{', '.join(MODELS)}")
    if p.uc_domain_format not in UC_DOMAIN_FORMATS:
        raise BadInput(f"UC domain format {p.uc_domain_format!r} is unknown; choose "
                       f"{' or '.join(UC_DOMAIN_FORMATS)}")
    _check_fqdn(p.fqdn, "node FQDN")
    if p.model == "standalone":
        if p.cluster_fqdn or p.peers:
            raise PolicyViolation(f"node {p.fqdn} is standalone but a cluster FQDN or peers "
                                  "are given; choose model cluster-per-peer or "
                                  "cluster-shared for a clustered node", "model", "standalone")
    else:
        if not p.cluster_fqdn:
            raise PolicyViolation(f"node {p.fqdn} is clustered ({p.model}) but has no cluster "
                                  "FQDN: the guide puts the FQDN of the cluster in every "
                                  "clustered peer's certificate", "cluster_fqdn", "required")
        _check_fqdn(p.cluster_fqdn, "cluster FQDN")
        if p.cluster_fqdn.lower() == p.fqdn.lower():
            raise PolicyViolation(f"the cluster FQDN {p.cluster_fqdn} is the node's own FQDN; "
                                  "a cluster has a name of its own", "cluster_fqdn", "distinct")
    if p.model == "cluster-shared" and not p.peers:
        raise PolicyViolation("a certificate shared across cluster peers must list all of "
                              "them (guide: 'If a certificate is shared across cluster peers, "
                              "it must list all possible peer FQDNs'); give the other peers",
                              "peers", "required")
    if len({peer.lower() for peer in p.peers} - {p.fqdn.lower()}) > MAX_CLUSTER_PEERS - 1:
        raise PolicyViolation(f"{len(p.peers)} other peers given; an Expressway cluster has at "
                              f"most {MAX_CLUSTER_PEERS} peers in all", "peers", "max-peers")
    for peer in p.peers:
        _check_fqdn(peer, "peer FQDN")
    for alias in p.chat_node_aliases:
        _check_fqdn(alias, "chat node alias")
    if p.role == "E" and p.phone_security_profiles:
        raise PolicyViolation("phone security profiles belong in the Expressway-C certificate "
                              f"(guide: {_C_SECTION}), not the Expressway-E's",
                              "phone_security_profiles", "role-C")
    if p.role == "C" and p.uc_domains:
        raise PolicyViolation("Unified Communications domains belong in the Expressway-E "
                              f"certificate (guide: {_E_SECTION}), not the Expressway-C's",
                              "uc_domains", "role-E")
    for name in p.phone_security_profiles:
        try:
            _check_fqdn(name, "phone security profile")
        except PolicyViolation as exc:
            if exc.rule == "no-wildcard":
                raise
            raise PolicyViolation(
                f"phone security profile {name[:80]!r} is not in FQDN format: the guide lists "
                f"only profiles named as FQDNs (such as secure.example.com; {_C_SECTION}), "
                "which Unified CM checks against the Expressway-C certificate; rename the "
                "profile in Unified CM or leave it out", "phone_security_profiles",
                "fqdn-format") from None
    for domain in p.uc_domains:
        check_dns_name(domain, what="UC domain")
        _check_fqdn(_uc_name(domain, p.uc_domain_format), "UC domain name")


def _check_fqdn(name: str, what: str) -> None:
    check_dns_name(name, what=what)
    if "." not in name:
        raise PolicyViolation(f"{what} {name!r} is a single label; give the fully qualified "
                              "name (host.example.com)", "subjectAltName", "fqdn")


def _uc_name(domain: str, fmt: str) -> str:
    # The Expressway-E Generate CSR page offers the UC domains either prefixed
    # (CollabEdgeDNS format: collab-edge.<domain>) or as the domain itself.
    return f"collab-edge.{domain}" if fmt == "collab-edge" else domain


def node_common_name(p: NodeProfile) -> str:
    """The CN: the node's FQDN, except for a certificate shared by every peer, whose CN is
    the cluster FQDN (the guide's OpenSSL appendix: "Common name - this is the Expressway
    cluster FQDN if the certificate is for a cluster of Expressways"; the same certificate
    on every peer cannot carry one peer's name as its CN)."""
    return p.cluster_fqdn if p.model == "cluster-shared" else p.fqdn


def node_san_names(p: NodeProfile) -> list[str]:
    """The DNS names of a checked profile, in order, each once (compared
    case-insensitively).

    The node's own FQDN is always among them, standalone too: the old guide's "Subject
    Alternate Names = leave blank" for a standalone node is outdated. TLS clients that
    follow RFC 6125 (section 6.4.4) do not look at the CN once a certificate carries any
    DNS SAN (and a clustered or UC certificate carries some), RFC 9525 and browsers do not
    look at it at all; current (X14) Cisco guidance lists the node FQDN as a SAN too."""
    if p.model == "cluster-shared":  # the CN first, as the guide's OpenSSL appendix lists
        names = [p.cluster_fqdn, p.fqdn, *p.peers]
    elif p.model == "cluster-per-peer":  # its own peer only: the others have their own
        names = [p.fqdn, p.cluster_fqdn]
    else:
        names = [p.fqdn]
    names += p.chat_node_aliases
    names += p.phone_security_profiles
    names += [_uc_name(d, p.uc_domain_format) for d in p.uc_domains]
    seen: set[str] = set()
    out = []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return out


def csr_subject_and_sans(p: NodeProfile, *, organization: str | None = None,
                         unit: str | None = None, locality: str | None = None,
                         state: str | None = None, country: str | None = None
                         ) -> tuple[x509.Name, list[x509.DNSName]]:
    """Subject (C, ST, L, O, OU, CN: most significant first, each value checked as every
    name pkiq issues is) and subjectAltNames for the node's request."""
    check_node_profile(p)
    fields = [(NameOID.COUNTRY_NAME, country), (NameOID.STATE_OR_PROVINCE_NAME, state),
              (NameOID.LOCALITY_NAME, locality), (NameOID.ORGANIZATION_NAME, organization),
              (NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
              (NameOID.COMMON_NAME, node_common_name(p))]
    subject = x509.Name([checked_attribute(oid, value) for oid, value in fields if value])
    return subject, [x509.DNSName(name) for name in node_san_names(p)]


def san_warnings(sans: Sequence[x509.GeneralName]) -> list[str]:
    """What Expressway's Generate CSR page warns about a long subjectAltName list."""
    text = ",".join(describe(n) for n in sans)
    if len(text) > SAN_WARN_CHARS:
        return [f"the subjectAltName list is {len(text)} characters; Expressway warns "
                f"past {SAN_WARN_CHARS} and may truncate it"]
    return []


# ---------------------------------------------------------------- keys and requests

NODE_KEY_TYPES = ("rsa2048", "rsa4096")
SIP_TLS_8192 = ("SIP TLS zones may fail to become active with 8192-bit keys (guide, "
                 "'Certificates with key length of 8192 bits'); use rsa4096, which the guide "
                 "recommends")


def check_node_key_type(kind: str) -> None:
    """The keys pkiq generates for a node: RSA, as Expressway's own Generate CSR page makes."""
    if kind == "rsa8192":
        raise PolicyViolation(f"rsa8192 is refused: {SIP_TLS_8192}", "key_type", "max-rsa")
    if kind not in NODE_KEY_TYPES:
        raise BadInput(f"node key type {kind!r} is not offered; choose one of "
                       f"{', '.join(NODE_KEY_TYPES)}")


def generate_node_key(kind: str = "rsa4096") -> rsa.RSAPrivateKey:
    check_node_key_type(kind)
    return generate_key(kind)


def build_node_csr(p: NodeProfile, key, **subject_fields) -> x509.CertificateSigningRequest:
    """The request Expressway's Generate CSR page would make for the node: its subject and
    names, serverAuth + clientAuth (mutual TLS in TLS verify mode needs both, guide
    Appendix 5) and the key usages of a TLS key. ``subject_fields`` are those of
    ``csr_subject_and_sans``."""
    public_key = key.public_key()
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 8192:
        raise PolicyViolation(f"an RSA {public_key.key_size}-bit node key is refused: "
                              f"{SIP_TLS_8192}", "publicKey", "max-rsa")
    check_key(public_key)
    subject, sans = csr_subject_and_sans(p, **subject_fields)
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    usage = x509.KeyUsage(digital_signature=True, key_encipherment=is_rsa,
                          content_commitment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    builder = (x509.CertificateSigningRequestBuilder().subject_name(subject)
               .add_extension(x509.SubjectAlternativeName(sans), critical=False)
               .add_extension(usage, critical=True)  # RFC 5280 4.2.1.3: SHOULD be critical
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    # SHA-256 (SHA-384 for P-384), not the guide's ``-sha1``: SHA-1 collisions are practical
    # (SHAttered, 2017) and current CAs and OpenSSL security levels refuse SHA-1 requests.
    return builder.sign(key, signature_hash(public_key))
