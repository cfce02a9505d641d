"""Drift: what each node holds, read over its REST API, against what pkiq says it should
hold (its store's current generation): the server certificate by fingerprint and notAfter,
CAs missing from or added to its trusted list behind pkiq's back, and whether it fetched its
CRL bundle from pkiq recently (pkiq's own access record: the REST API does not expose an
Expressway's CRL update settings). Every finding is kept on the node and raised as an alert
by the scheduler; a node that cannot be read is a finding too.
"""

from __future__ import annotations

import datetime as dt
import logging

from cryptography import x509
from sqlalchemy import select

from ca import nodes
from ca.errors import PkiqError
from ca.expressway_api import Finding, compare, crl_fetch_finding
from ca.models import BundleFetch, ExpresswayCluster, ExpresswayNode
from ca.models import NodeApi as NodeApiRow
from ca.sql import insert_or_ignore
from ca.store_material import Catalogue
from ca.trust import load_bundle
from shell.expressway_client import NodeApi, NodeApiError
from shell.stores import NodeStore

from . import node_api
from . import stores as store_service
from .context import ServiceContext
from .push import Connector

log = logging.getLogger("pkiq.drift")


def _expected(ctx: ServiceContext, fqdn: str
              ) -> tuple[x509.Certificate | None, list[x509.Certificate]] | None:
    with ctx.transaction() as session:
        root = store_service.store_root(ctx.settings, nodes.get_node(session, fqdn))
    store = NodeStore(root, keep=1)
    if store.current_generation() is None:
        return None
    _generation, files = store.read_current(["server.pem", "trusted-ca.pem"])
    server = x509.load_pem_x509_certificate(files["server.pem"]) \
        if "server.pem" in files else None
    trusted = load_bundle(files["trusted-ca.pem"]) if "trusted-ca.pem" in files else []
    return server, trusted


def check(ctx: ServiceContext, fqdn: str | None = None, *, passphrase: bytes | None,
          connector: Connector = NodeApi) -> list[dict]:
    """Read every node with REST settings (or one) and record what differs."""
    with ctx.transaction() as session:
        targets = [nodes.get_node(session, fqdn)] if fqdn else \
            node_api.nodes_with_api(session)
        names = [n.fqdn for n in targets]
        for node in targets:
            node_api.get_api(session, node)
    return [_check_one(ctx, name, passphrase, connector) for name in names]


def _check_one(ctx: ServiceContext, fqdn: str, passphrase: bytes | None,
               connector: Connector) -> dict:
    now = ctx.clock()
    findings: list[Finding] = []
    try:
        expected = _expected(ctx, fqdn)
        with ctx.transaction() as session:
            node = nodes.get_node(session, fqdn)
            endpoint = node_api.endpoint_for(session, ctx, node, passphrase,
                                             Catalogue.load(session))
            managed = frozenset(node_api.get_api(session, node).managed_cas or [])
        with connector(endpoint) as api:
            api.require(("GET", "server"), ("GET", "trusted"))
            held_server = api.server_certificates()
            held_trusted = api.trusted_certificates()
        if expected is None:
            findings.append(Finding("unpublished", "warning",
                                    "pkiq has not published this node's store yet: nothing "
                                    "to compare with (pkiq node publish)"))
        else:
            findings += compare(expected[0], expected[1],
                                held_server[0] if held_server else None, held_trusted, now,
                                managed)
    except (NodeApiError, PkiqError) as exc:
        findings.append(Finding("unreachable", "critical",
                                f"the node could not be read: {exc}"))
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn)
        row = node_api.get_api(session, node, for_update=True)
        fetch = session.scalar(select(BundleFetch).where(BundleFetch.node_id == node.id))
        within = dt.timedelta(hours=row.crl_fetch_hours) if row.crl_fetch_hours else None
        crl = crl_fetch_finding(fetch.fetched_at if fetch else None, within, now,
                                row.created_at)
        if crl is not None:
            findings.append(crl)
        row.drift = [f.view() for f in findings]
        row.drift_checked_at = now
    for finding in findings:
        log.warning("drift on %s: %s", fqdn, finding.text)
    return {"node": fqdn, "checked_at": now.isoformat(), "drift": [f.view() for f in findings],
            "in_sync": not findings}


def record_bundle_fetch(ctx: ServiceContext, kind: str, name: str, remote: str | None,
                        path: str) -> str | None:
    """The web app served a CRL bundle: note when, for the node that fetched it. A node URL
    names the node; a cluster URL is put down to the peer whose API address is the client's
    (peers pointed at their own node URL are told apart for certain). Returns the node, or
    None when no node could be named."""
    now = ctx.clock()
    with ctx.transaction() as session:
        if kind == "node":
            node = session.scalar(select(ExpresswayNode).where(ExpresswayNode.fqdn == name))
        else:
            node = session.scalar(select(ExpresswayNode).join(
                NodeApiRow, NodeApiRow.node_id == ExpresswayNode.id).join(
                ExpresswayCluster, ExpresswayCluster.id == ExpresswayNode.cluster_id).where(
                ExpresswayCluster.name == name, NodeApiRow.address == remote))
        if node is None:
            return None
        values = dict(node_id=node.id, fetched_at=now, remote=(remote or "")[:64],
                      path=path[:300], count=1)
        if not insert_or_ignore(session, BundleFetch, values):
            row = session.get(BundleFetch, node.id, with_for_update=True)
            row.fetched_at, row.remote, row.path = now, values["remote"], values["path"]
            row.count += 1
        return node.fqdn
