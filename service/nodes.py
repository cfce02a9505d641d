"""Expressway nodes, clusters and trusted sets; each node's key, CSR and server certificate.

The CLI and the web app call these; passphrases arrive as bytes (the service passphrase
protects node keys as it protects CA keys)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ca import jobs, node_credentials, nodes
from ca.authority import check_in_service, get_ca
from ca.errors import WrongPassphrase
from ca.expressway import csr_subject_and_sans, san_warnings
from ca.general_names import describe
from ca.models import ExpresswayCluster, ExpresswayNode, NodeCredential, TrustedSet
from ca.names import openssl_oneline
from ca.nodes import NodeChanges
from ca.store_material import Catalogue
from ca.x509text import decode_all, render
from ca.x509text import describe as describe_item

from .context import ServiceContext
from .jobs import announce


def _audited(ctx: ServiceContext, session, action: str, target: str, view: dict,
             data: dict | None = None) -> dict:
    """Record the change in the audit log (same transaction) and hand the view back."""
    ctx.audit(session, action, target, data if data is not None else view)
    return view


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def cluster_view(cluster: ExpresswayCluster, peers: list[ExpresswayNode] | None = None) -> dict:
    view = {"name": cluster.name, "fqdn": cluster.fqdn, "model": cluster.model}
    if peers is not None:
        view["peers"] = [n.fqdn for n in peers]
    return view


def set_view(row: TrustedSet) -> dict:
    return {"name": row.name, "members": [
        {"ca": m["ca"]} if "ca" in m else {"sha256": m["sha256"], "subject": m.get("subject")}
        for m in row.members], "updated_at": _iso(row.updated_at)}


def credential_view(row: NodeCredential | None) -> dict | None:
    if row is None:
        return None
    cert = node_credentials.certificate(row)
    view = {"id": row.id, "state": row.state, "source": row.source, "key": row.key_type,
            "created_at": _iso(row.created_at), "activated_at": _iso(row.activated_at),
            "job": row.job_id, "warnings": list(row.warnings)}
    if cert is not None:
        view.update(serial=f"{cert.serial_number:X}", subject=openssl_oneline(cert.subject),
                    issuer=openssl_oneline(cert.issuer),
                    not_after=_iso(cert.not_valid_after_utc))
    return view


def node_view(node: ExpresswayNode) -> dict:
    return {
        "fqdn": node.fqdn, "role": node.role,
        "cluster": node.cluster.name if node.cluster else None,
        "chat_node_aliases": list(node.chat_node_aliases),
        "phone_security_profiles": list(node.phone_security_profiles),
        "uc_domains": list(node.uc_domains), "uc_domain_format": node.uc_domain_format,
        "trusted_set": node.trusted_set.name if node.trusted_set else None,
        "store_dir": node.store_dir, "keep_generations": node.keep_generations,
        "published_at": _iso(node.published_at),
        "published_generation": node.published_generation,
        "publish_due_at": _iso(node.publish_due_at), "publish_reason": node.publish_reason,
        "publish_error": node.publish_error, "coverage_gaps": list(node.coverage_gaps),
    }


# ---------------------------------------------------------------- clusters

def add_cluster(ctx: ServiceContext, name: str, fqdn: str, model: str) -> dict:
    with ctx.transaction() as session:
        return _audited(ctx, session, "cluster.add", f"cluster:{name}", cluster_view(
            nodes.add_cluster(session, name, fqdn, model, ctx.clock()), []))


def list_clusters(ctx: ServiceContext) -> list[dict]:
    with ctx.transaction() as session:
        return [cluster_view(c, nodes.cluster_nodes(session, c))
                for c in nodes.list_clusters(session)]


def show_cluster(ctx: ServiceContext, name: str) -> dict:
    with ctx.transaction() as session:
        cluster = nodes.get_cluster(session, name)
        return cluster_view(cluster, nodes.cluster_nodes(session, cluster))


def remove_cluster(ctx: ServiceContext, name: str) -> dict:
    with ctx.transaction() as session:
        return _audited(ctx, session, "cluster.remove", f"cluster:{name}",
                        cluster_view(nodes.remove_cluster(session, name)))


# ---------------------------------------------------------------- trusted sets

def create_set(ctx: ServiceContext, name: str, refs: list[str]) -> dict:
    with ctx.transaction() as session:
        return _audited(ctx, session, "trustset.create", f"trustset:{name}",
                        set_view(nodes.create_set(session, name, refs, ctx.clock())))


def change_set(ctx: ServiceContext, name: str, add: list[str], remove: list[str]) -> dict:
    """Members added or removed; every node holding the set is published again."""
    with ctx.transaction() as session:
        row = nodes.change_set(session, nodes.get_set(session, name), add=add, remove=remove,
                               now=ctx.clock())
        for node in nodes.list_nodes(session):
            if node.trusted_set_id == row.id:
                nodes.mark_due(node, ctx.clock(), f"trusted set {row.name} changed")
        return _audited(ctx, session, "trustset.change", f"trustset:{row.name}",
                        set_view(row), {"added": add, "removed": remove})


def list_sets(ctx: ServiceContext) -> list[dict]:
    with ctx.transaction() as session:
        return [set_view(r) for r in nodes.list_sets(session)]


def show_set(ctx: ServiceContext, name: str) -> dict:
    """The members and the certificates they stand for now (a pkiq CA: with its chain)."""
    with ctx.transaction() as session:
        row = nodes.get_set(session, name)
        certs, missing = Catalogue.load(session).members(row.members)
        view = set_view(row)
    view["certificates"] = [{"subject": openssl_oneline(c.subject),
                             "sha256": c.fingerprint(hashes.SHA256()).hex()} for c in certs]
    view["missing"] = missing
    return view


def remove_set(ctx: ServiceContext, name: str) -> dict:
    with ctx.transaction() as session:
        return _audited(ctx, session, "trustset.delete", f"trustset:{name}",
                        set_view(nodes.remove_set(session, name)))


# ---------------------------------------------------------------- nodes

def add_node(ctx: ServiceContext, fqdn: str, changes: NodeChanges) -> dict:
    with ctx.transaction() as session:
        view = node_view(nodes.add_node(session, fqdn, changes, ctx.clock()))
        return _audited(ctx, session, "node.add", f"node:{view['fqdn']}", view)


def update_node(ctx: ServiceContext, fqdn: str, changes: NodeChanges) -> dict:
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn, for_update=True)
        view = node_view(nodes.update_node(session, node, changes, ctx.clock()))
        return _audited(ctx, session, "node.set", f"node:{node.fqdn}", view)


def list_nodes(ctx: ServiceContext, cluster: str | None = None) -> list[dict]:
    with ctx.transaction() as session:
        out = []
        for node in nodes.list_nodes(session, cluster):
            view = node_view(node)
            view["certificate"] = credential_view(node_credentials.active(session, node))
            view["csr_in_progress"] = node_credentials.pending(session, node) is not None
            out.append(view)
        return out


def show_node(ctx: ServiceContext, fqdn: str) -> dict:
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn)
        view = node_view(node)
        subject, sans = csr_subject_and_sans(nodes.node_profile(session, node))
        view["csr_names"] = {"subject": openssl_oneline(subject),
                             "subject_alt_names": [n.value for n in sans]}
        view["certificate"] = credential_view(node_credentials.active(session, node))
        view["csr"] = credential_view(node_credentials.pending(session, node))
        return view


def remove_node(ctx: ServiceContext, fqdn: str) -> dict:
    with ctx.transaction() as session:
        view = node_view(nodes.remove_node(session, fqdn))
        return _audited(ctx, session, "node.remove", f"node:{view['fqdn']}", view)


# ---------------------------------------------------------------- CSR and certificates

def _need(passphrase: bytes | None) -> bytes:
    if not passphrase:
        raise WrongPassphrase("node keys are stored encrypted under the service passphrase: "
                              "set PKIQ_CA_PASSPHRASE_FILE (or --passphrase-file)")
    return passphrase


def generate_csr(ctx: ServiceContext, fqdn: str, *, key_type: str, passphrase: bytes | None,
                 subject_fields: dict, key=None) -> dict:
    """The guide's Generate CSR: a new key kept here, encrypted, and the request for it."""
    passphrase = _need(passphrase)
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn, for_update=True)
        row = node_credentials.start_csr(session, node, nodes.node_profile(session, node),
                                         key_type=key_type, passphrase=passphrase,
                                         now=ctx.clock(), key=key, **subject_fields)
        view = _csr_view(row)
        return _audited(ctx, session, "node.csr", f"node:{node.fqdn}", view,
                        {"key_type": key_type, "subject": view["subject"]})


def _csr_view(row: NodeCredential) -> dict:
    csr = x509.load_der_x509_csr(row.csr_der)
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {**credential_view(row), "subject": openssl_oneline(csr.subject),
            "subject_alt_names": [describe(n) for n in sans],
            "warnings": san_warnings(list(sans)),
            "pem": csr.public_bytes(serialization.Encoding.PEM).decode()}


def show_csr(ctx: ServiceContext, fqdn: str, *, decoded: bool = False) -> dict:
    with ctx.transaction() as session:
        row = node_credentials.require_pending(session, nodes.get_node(session, fqdn))
        view = _csr_view(row)
    if decoded:
        [item] = decode_all(view["pem"].encode())
        view["decoded"] = describe_item(item)
        view["text"] = render(item)
    return view


def discard_csr(ctx: ServiceContext, fqdn: str) -> dict:
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn, for_update=True)
        return _audited(ctx, session, "node.csr.discard", f"node:{node.fqdn}",
                        credential_view(node_credentials.discard(session, node, ctx.clock())))


def submit_csr(ctx: ServiceContext, fqdn: str, *, ca_name: str, profile: str,
               requester: str, days: int | None = None) -> tuple[dict, str | None]:
    """Queue the CSR in progress on the signing queue; the certificate issued for it is
    paired with the node's key in the signing transaction."""
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn, for_update=True)
        row = node_credentials.require_pending(session, node)
        ca = get_ca(session, ca_name)
        check_in_service(ca)
        done = jobs.submit(session, ca, row.csr_der, profile=profile, requester=requester,
                           now=ctx.clock(), days=days, node=node.fqdn)
        node_credentials.link_job(row, done.job)
        info = jobs.job_info(done.job)
        ctx.audit(session, "job.submit", f"job:{info['id']}",
                  {"ca": info["ca"], "profile": profile, "subject": info["subject"],
                   "requester": requester, "node": node.fqdn})
    queued = [info["id"]] if done.created and info["state"] == "queued" else []
    return info, announce(ctx, queued)


def upload_certificate(ctx: ServiceContext, fqdn: str, cert_data: bytes, key_data: bytes | None,
                       *, passphrase: bytes | None) -> dict:
    """A server certificate made elsewhere, for the CSR in progress or with its own key."""
    passphrase = _need(passphrase)
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn, for_update=True)
        trusted, _ = Catalogue.load(session).trusted_for(node)
        row, checked = node_credentials.upload(session, node, cert_data, key_data,
                                               passphrase=passphrase, trusted=trusted,
                                               now=ctx.clock())
        return _audited(ctx, session, "node.upload", f"node:{node.fqdn}",
                        {**credential_view(row), "warnings": list(checked.warnings)})


def certificates(ctx: ServiceContext, fqdn: str) -> list[dict]:
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn)
        return [credential_view(r) for r in node_credentials.history(session, node)]
