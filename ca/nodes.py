"""The Expressway registry: clusters, nodes and the named trusted sets they hold.

A node's names come from the guide's Generate CSR page (its FQDN, its cluster's, the
Unified Communications extras of its role); ``ca.expressway`` says what a CSR made from them
contains. FQDNs are kept lower-case: DNS names compare without case (RFC 4343), and a node
registered twice under two spellings would get two keys and two stores.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .authority import get_ca
from .errors import BadInput, Conflict, NotFound
from .expressway import MODELS, UC_DOMAIN_FORMATS, NodeProfile, check_node_profile
from .general_names import check_dns_name
from .models import (
    BundleFetch,
    ExpresswayCluster,
    ExpresswayNode,
    NodeApi,
    NodeCredential,
    PushJob,
    Rollout,
    TrustedSet,
)
from .trust import find as find_entry

MAX_EXTRAS = 200  # names per list: Expressway warns past 999 characters of SANs anyway
MAX_KEEP = 100
CLUSTERED_MODELS = tuple(m for m in MODELS if m != "standalone")


def fqdn(value: str, what: str = "FQDN") -> str:
    """A host name as Expressway and DNS use it: checked, lower-case, no trailing dot."""
    name = value.strip().rstrip(".").lower()
    check_dns_name(name, what=what)
    return name


def _names(values: Sequence[str], what: str) -> list[str]:
    if len(values) > MAX_EXTRAS:
        raise BadInput(f"{len(values)} {what}: pkiq keeps at most {MAX_EXTRAS}")
    return list(dict.fromkeys(fqdn(v, what) for v in values))


def _label(value: str, what: str) -> str:
    name = value.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise BadInput(f"{what} {value[:80]!r}: use 1-64 letters, digits, '-', '_' or '.'")
    return name


# ---------------------------------------------------------------- clusters

def add_cluster(session: Session, name: str, cluster_fqdn: str, model: str,
                now: dt.datetime) -> ExpresswayCluster:
    name = _label(name, "cluster name")
    if model not in CLUSTERED_MODELS:
        raise BadInput(f"cluster model {model!r}: choose {' or '.join(CLUSTERED_MODELS)} "
                       "(a node outside any cluster is standalone)")
    if session.scalar(select(ExpresswayCluster).where(ExpresswayCluster.name == name)):
        raise Conflict(f"a cluster named {name!r} exists already")
    cluster = ExpresswayCluster(name=name, fqdn=fqdn(cluster_fqdn, "cluster FQDN"),
                                model=model, created_at=now)
    session.add(cluster)
    session.flush()
    return cluster


def get_cluster(session: Session, name: str) -> ExpresswayCluster:
    cluster = session.scalar(select(ExpresswayCluster).where(ExpresswayCluster.name == name))
    if cluster is None:
        raise NotFound(f"no cluster named {name[:80]!r} (pkiq cluster list shows them)")
    return cluster


def list_clusters(session: Session) -> list[ExpresswayCluster]:
    return list(session.scalars(select(ExpresswayCluster).order_by(ExpresswayCluster.name)))


def cluster_nodes(session: Session, cluster: ExpresswayCluster) -> list[ExpresswayNode]:
    return list(session.scalars(select(ExpresswayNode).where(
        ExpresswayNode.cluster_id == cluster.id).order_by(ExpresswayNode.fqdn)))


def remove_cluster(session: Session, name: str) -> ExpresswayCluster:
    cluster = get_cluster(session, name)
    peers = cluster_nodes(session, cluster)
    if peers:
        raise Conflict(f"cluster {name!r} still has {len(peers)} peer(s) "
                       f"({', '.join(n.fqdn for n in peers[:5])}); remove them or move them "
                       "to another cluster first")
    session.delete(cluster)
    session.flush()
    return cluster


# ---------------------------------------------------------------- trusted sets

def _resolve_member(session: Session, ref: str) -> dict:
    """``ca:NAME`` or a pkiq CA's name; else a trusted CA list entry by id or fingerprint."""
    if ref.startswith("ca:"):
        return {"ca": get_ca(session, ref[3:]).name}
    try:
        return {"ca": get_ca(session, ref).name}
    except NotFound:
        pass
    try:
        row = find_entry(session, ref)  # one look-up rule for entries, as `pkiq trust` uses
    except (BadInput, NotFound):
        raise NotFound(f"{ref[:80]!r} is neither a pkiq CA nor an entry of the trusted CA "
                       "list: give a CA name (ca:NAME), a list id or a SHA-256 fingerprint "
                       "prefix of 8 or more hex digits (pkiq trust list)") from None
    return {"sha256": row.sha256, "subject": row.subject}


def create_set(session: Session, name: str, refs: Sequence[str], now: dt.datetime
               ) -> TrustedSet:
    name = _label(name, "trusted set name")
    if session.scalar(select(TrustedSet).where(TrustedSet.name == name)):
        raise Conflict(f"a trusted set named {name!r} exists already")
    row = TrustedSet(name=name, members=[], created_at=now, updated_at=now)
    session.add(row)
    change_set(session, row, add=refs, remove=(), now=now)
    return row


def change_set(session: Session, row: TrustedSet, *, add: Sequence[str],
               remove: Sequence[str], now: dt.datetime) -> TrustedSet:
    members = list(row.members)
    for ref in add:
        member = _resolve_member(session, ref)
        if member not in members and not any(_same(m, member) for m in members):
            members.append(member)
    for ref in remove:
        member = _resolve_member(session, ref)
        kept = [m for m in members if not _same(m, member)]
        if len(kept) == len(members):
            raise NotFound(f"{ref!r} is not a member of trusted set {row.name!r}")
        members = kept
    row.members, row.updated_at = members, now
    session.flush()
    return row


def _same(a: dict, b: dict) -> bool:
    return (a.get("ca"), a.get("sha256")) == (b.get("ca"), b.get("sha256"))


def get_set(session: Session, name: str) -> TrustedSet:
    row = session.scalar(select(TrustedSet).where(TrustedSet.name == name))
    if row is None:
        raise NotFound(f"no trusted set named {name[:80]!r} (pkiq trustset list shows them)")
    return row


def list_sets(session: Session) -> list[TrustedSet]:
    return list(session.scalars(select(TrustedSet).order_by(TrustedSet.name)))


def remove_set(session: Session, name: str) -> TrustedSet:
    row = get_set(session, name)
    users = session.scalar(select(func.count()).select_from(ExpresswayNode).where(
        ExpresswayNode.trusted_set_id == row.id))
    if users:
        raise Conflict(f"trusted set {name!r} is held by {users} node(s); give them another "
                       "set first (pkiq node set NODE --trusted-set OTHER)")
    session.delete(row)
    session.flush()
    return row


# ---------------------------------------------------------------- nodes

@dataclass
class NodeChanges:
    """What ``add_node`` / ``update_node`` set; None (or an empty tuple with the flag off)
    leaves a field as it is."""

    role: str | None = None
    cluster: str | None = None  # a cluster name; "" leaves the cluster
    chat_node_aliases: tuple[str, ...] | None = None
    phone_security_profiles: tuple[str, ...] | None = None
    uc_domains: tuple[str, ...] | None = None
    uc_domain_format: str | None = None
    trusted_set: str | None = None  # a set name; "" back to the whole trusted CA list
    store_dir: str | None = None  # "" back to the default
    keep_generations: int | None = None


def get_node(session: Session, name: str, *, for_update: bool = False) -> ExpresswayNode:
    query = select(ExpresswayNode).where(ExpresswayNode.fqdn == name.strip().rstrip(".").lower())
    node = session.scalar(query.with_for_update() if for_update else query)
    if node is None:
        raise NotFound(f"no node {name[:80]!r} (pkiq node list shows them)")
    return node


def list_nodes(session: Session, cluster: str | None = None) -> list[ExpresswayNode]:
    query = select(ExpresswayNode).order_by(ExpresswayNode.fqdn)
    if cluster is not None:
        query = query.where(ExpresswayNode.cluster_id == get_cluster(session, cluster).id)
    return list(session.scalars(query))


def add_node(session: Session, name: str, changes: NodeChanges, now: dt.datetime
             ) -> ExpresswayNode:
    node_fqdn = fqdn(name, "node FQDN")
    if session.scalar(select(ExpresswayNode).where(ExpresswayNode.fqdn == node_fqdn)):
        raise Conflict(f"node {node_fqdn} is registered already (pkiq node set changes it)")
    if changes.role is None:
        raise BadInput("give the node's role: --role C (Expressway-C) or --role E "
                       "(Expressway-E)")
    node = ExpresswayNode(fqdn=node_fqdn, chat_node_aliases=[], phone_security_profiles=[],
                          uc_domains=[], uc_domain_format="collab-edge", keep_generations=5,
                          publish_attempts=0, coverage_gaps=[], created_at=now,
                          updated_at=now, publish_due_at=now, publish_reason="registered")
    session.add(node)
    return update_node(session, node, changes, now)


def update_node(session: Session, node: ExpresswayNode, changes: NodeChanges,
                now: dt.datetime) -> ExpresswayNode:
    if changes.role is not None:
        role = changes.role.strip().upper().removeprefix("EXPRESSWAY-")
        if role not in ("C", "E"):
            raise BadInput(f"role {changes.role!r}: C (Expressway-C) or E (Expressway-E)")
        node.role = role
    if changes.cluster is not None:
        node.cluster = get_cluster(session, changes.cluster) if changes.cluster else None
    for name, what in (("chat_node_aliases", "chat node alias"),
                       ("phone_security_profiles", "phone security profile name"),
                       ("uc_domains", "Unified Communications domain")):
        value = getattr(changes, name)
        if value is not None:
            setattr(node, name, _names(value, what))
    if changes.uc_domain_format is not None:
        if changes.uc_domain_format not in UC_DOMAIN_FORMATS:
            raise BadInput(f"UC domain format {changes.uc_domain_format!r}: choose "
                           f"{' or '.join(UC_DOMAIN_FORMATS)}")
        node.uc_domain_format = changes.uc_domain_format
    if changes.trusted_set is not None:
        node.trusted_set = get_set(session, changes.trusted_set) if changes.trusted_set \
            else None
    if changes.store_dir is not None:
        node.store_dir = _store_dir(changes.store_dir) or None
        other = node.store_dir and session.scalar(select(ExpresswayNode.fqdn).where(
            ExpresswayNode.store_dir == node.store_dir, ExpresswayNode.fqdn != node.fqdn))
        if other:
            raise Conflict(f"{node.store_dir} is the store of node {other} already: each "
                           "node needs a folder of its own (one would overwrite the other's "
                           "certificate and key)")
    if changes.keep_generations is not None:
        if not 1 <= changes.keep_generations <= MAX_KEEP:
            raise BadInput(f"keep {changes.keep_generations} generations: choose 1 to "
                           f"{MAX_KEEP}")
        node.keep_generations = changes.keep_generations
    profile = node_profile(session, node)
    if profile.model == "cluster-shared" and not profile.peers:
        # The first peer of a shared-certificate cluster is registered before the others;
        # the CSR, made once they are all there, must list every one (checked then).
        profile = dataclasses.replace(profile, model="cluster-per-peer")
    check_node_profile(profile)
    node.updated_at = now
    mark_due(node, now, "node settings changed")
    session.flush()
    return node


def _store_dir(value: str) -> str:
    if value and (not value.startswith("/") or "\x00" in value or len(value) > 1024):
        raise BadInput(f"store folder {value[:80]!r}: give an absolute path")
    return value.rstrip("/") or value


def node_profile(session: Session, node: ExpresswayNode) -> NodeProfile:
    """The node's names as ``ca.expressway`` builds a CSR from them; the peers are the
    other nodes registered in its cluster."""
    cluster = node.cluster
    peers: tuple[str, ...] = ()
    if cluster is not None:
        peers = tuple(n.fqdn for n in cluster_nodes(session, cluster) if n.id != node.id)
    return NodeProfile(
        fqdn=node.fqdn, role=node.role,
        model=cluster.model if cluster is not None else "standalone",
        cluster_fqdn=cluster.fqdn if cluster is not None else None, peers=peers,
        chat_node_aliases=tuple(node.chat_node_aliases),
        phone_security_profiles=tuple(node.phone_security_profiles),
        uc_domains=tuple(node.uc_domains), uc_domain_format=node.uc_domain_format)


def remove_node(session: Session, name: str) -> ExpresswayNode:
    """Forget a node, with its keys: its store on disk is left for the operator."""
    node = get_node(session, name, for_update=True)
    open_jobs = session.scalar(select(PushJob.rollout_id).join(Rollout).where(
        PushJob.node_id == node.id, Rollout.state.not_in(("done", "cancelled"))).limit(1))
    if open_jobs is not None:
        raise Conflict(f"node {node.fqdn} is a peer of open rollout {open_jobs}: finish or "
                       "cancel it first (pkiq rollout cancel)")
    for model in (NodeCredential, PushJob, NodeApi, BundleFetch):
        for row in session.scalars(select(model).where(model.node_id == node.id)):
            session.delete(row)
    session.flush()
    session.delete(node)
    session.flush()
    return node


def mark_due(node: ExpresswayNode, now: dt.datetime, reason: str) -> None:
    """Ask for the node's store to be published at the next stores tick (or now, by
    ``pkiq node publish``); a publication that fails sets the next try itself."""
    node.publish_due_at = now
    node.publish_reason = reason[:500]
    node.publish_attempts = 0
