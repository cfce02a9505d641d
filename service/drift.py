"""Drift: what each node holds, read over its REST API, against what pkiq says it should
hold (its store's current generation): the server certificate by fingerprint and notAfter,
CAs missing from or added to its trusted list behind pkiq's back, and whether it fetched its
CRL bundle from pkiq recently (pkiq's own access record: the REST API does not expose an
Expressway's CRL update settings). Every finding is kept on the node and raised as an alert
by the scheduler; a node that cannot be read is a finding too.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import time

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
from shell.expressway_client import NodeApi, NodeApiError, NodeRefused
from shell.stores import NodeStore

from . import node_api, push
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
    refused = None
    try:
        with ctx.transaction() as session:
            row = node_api.get_api(session, nodes.get_node(session, fqdn))
            refused = row.auth_refused_at
        if refused is not None:
            findings.append(Finding(
                "unreachable", "critical",
                f"the node refused pkiq's credentials at {refused:%Y-%m-%d %H:%M}Z; they are "
                "not sent again (an account lockout) until pkiq node api set changes them",
                {"auth_refused_at": refused.isoformat()}))
        else:
            findings += _read_and_compare(ctx, fqdn, passphrase, connector, now)
    except NodeRefused as exc:
        if exc.status == 401:
            refused = now
        findings.append(Finding("unreachable", "critical", f"the node could not be read: {exc}"))
    except (NodeApiError, PkiqError) as exc:
        findings.append(Finding("unreachable", "critical", f"the node could not be read: {exc}"))
    except Exception as exc:  # noqa: BLE001 - one node's surprise must not hide the others
        log.exception("drift check of %s failed unexpectedly", fqdn)
        findings.append(Finding("unreachable", "critical", f"the node could not be checked: "
                                f"internal error: {type(exc).__name__}: {str(exc)[:300]}"))
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn)
        row = node_api.get_api(session, node, for_update=True)
        row.auth_refused_at = refused
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


def _read_and_compare(ctx: ServiceContext, fqdn: str, passphrase: bytes | None,
                      connector: Connector, now: dt.datetime) -> list[Finding]:
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
        return [Finding("unpublished", "warning", "pkiq has not published this node's store "
                        "yet: nothing to compare with (pkiq node publish)")]
    return compare(expected[0], expected[1], push.held_server(held_server, expected[0]),
                   held_trusted, now, managed)


def record_bundle_fetch(ctx: ServiceContext, kind: str, name: str, remote: str | None,
                        path: str) -> str | None:
    """The web app served a CRL bundle: note when, for the node that fetched it. A node URL
    names the node; a cluster URL is put down to the peer whose address (its REST
    ``--address``, else its FQDN, resolved) is the client's. Behind a reverse proxy every
    client is the proxy: point each peer at its own node URL then. Returns the node, or None
    when no node could be named."""
    now = ctx.clock()
    if kind == "node":
        with ctx.read_transaction() as session:
            node_id = session.scalar(select(ExpresswayNode.id).where(
                ExpresswayNode.fqdn == name))
    else:
        with ctx.read_transaction() as session:
            peers = session.execute(select(ExpresswayNode.id, ExpresswayNode.fqdn,
                                           NodeApiRow.address).join(
                ExpresswayCluster, ExpresswayCluster.id == ExpresswayNode.cluster_id).outerjoin(
                NodeApiRow, NodeApiRow.node_id == ExpresswayNode.id).where(
                ExpresswayCluster.name == name)).all()
        node_id = next((peer_id for peer_id, fqdn, address in peers  # no lock while resolving
                        if remote and remote in _addresses(address or fqdn)), None)
    if node_id is None:
        return None
    with ctx.transaction() as session:
        values = dict(node_id=node_id, fetched_at=now, remote=(remote or "")[:64],
                      path=path[:300], count=1)
        if not insert_or_ignore(session, BundleFetch, values):
            row = session.get(BundleFetch, node_id, with_for_update=True)
            row.fetched_at, row.remote, row.path = now, values["remote"], values["path"]
            row.count += 1
        return session.get(ExpresswayNode, node_id).fqdn


_RESOLVED: dict[str, tuple[float, frozenset[str]]] = {}
RESOLVE_TTL = 300.0


def _addresses(host: str) -> frozenset[str]:
    """The IP addresses of ``host`` (itself if it is one), cached five minutes."""
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        pass
    cached = _RESOLVED.get(host)
    if cached and time.monotonic() - cached[0] < RESOLVE_TTL:
        return cached[1]
    try:
        found = frozenset(info[4][0] for info in socket.getaddrinfo(host, None))
    except OSError:
        found = frozenset()
    if len(_RESOLVED) > 10_000:
        _RESOLVED.clear()
    _RESOLVED[host] = (time.monotonic(), found)
    return found
