"""Publishing each node's store: coverage first, then the files, one node at a time.

A node's store is rebuilt when what it is made of changed (its certificate, its trusted CA
list, a CRL it carries) or when it was asked for; an unchanged store is left alone (nothing
is written). One node failing (disk full, permission denied, a gap that blocks nothing but
is reported) never holds up another: each runs in its own transaction, and a failure sets
the node's next try with a growing delay, which the stores tick honours.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ca import node_credentials, nodes
from ca.errors import PkiqError, WrongPassphrase
from ca.models import ExpresswayNode
from ca.store_layout import StoreInputs, store_files
from ca.store_material import Catalogue, NodeMaterial, crl_ders
from shell.settings import Settings
from shell.stores import NodeStore

from .context import ServiceContext

log = logging.getLogger("pkiq.stores")
RETRY_FIRST = dt.timedelta(seconds=30)
RETRY_MAX = dt.timedelta(hours=1)
MAX_ERROR = 2000


def store_root(settings: Settings, node: ExpresswayNode) -> Path:
    return Path(node.store_dir) if node.store_dir else settings.effective_stores_dir / node.fqdn


def headroom(settings: Settings) -> dt.timedelta:
    return dt.timedelta(hours=settings.store_crl_headroom_hours)


def retry_delay(attempts: int) -> dt.timedelta:
    """30 s, 1 min, 2 min, ... up to an hour: a full disk is not mended in a second, and
    an operator who mends it can publish at once (``pkiq node publish``)."""
    return min(RETRY_FIRST * (2 ** min(max(attempts - 1, 0), 16)), RETRY_MAX)


@dataclass
class NodeOutcome:
    node: str
    state: str  # published | unchanged | failed | skipped
    generation: int | None = None
    bytes_written: int = 0
    gaps: list[dict] = field(default_factory=list)
    error: str | None = None
    path: str | None = None

    def view(self) -> dict:
        return {"node": self.node, "state": self.state, "generation": self.generation,
                "bytes_written": self.bytes_written, "gaps": self.gaps, "error": self.error,
                "path": self.path}


def _material(session, catalogue: Catalogue, node: ExpresswayNode, settings: Settings,
              now: dt.datetime) -> NodeMaterial:
    return catalogue.material(node, node_credentials.active(session, node), now,
                              headroom(settings), node.coverage_gaps)


def check(ctx: ServiceContext, fqdn: str | None = None) -> list[dict]:
    """Coverage of one node or all: every CA of its trusted list with a CRL valid for the
    headroom, and the set members that no longer resolve. Changes nothing."""
    now = ctx.clock()
    with ctx.transaction() as session:
        catalogue = Catalogue.load(session)
        targets = [nodes.get_node(session, fqdn)] if fqdn else nodes.list_nodes(session)
        out = []
        for node in targets:
            material = _material(session, catalogue, node, ctx.settings, now)
            out.append({"node": node.fqdn, "trusted": len(material.trusted),
                        "crls": len(material.crls), "gaps": [g.view() for g in material.gaps],
                        "missing": material.missing,
                        "certificate": material.credential is not None,
                        "published_at": node.published_at.isoformat()
                        if node.published_at else None,
                        "up_to_date": material.inputs == node.published_inputs})
        return out


def publish(ctx: ServiceContext, fqdn: str | None = None, *, passphrase: bytes | None,
            force: bool = False, due_only: bool = False) -> list[NodeOutcome]:
    """Publish one node's store or every node's. ``due_only`` (the stores tick): only the
    nodes whose inputs changed, or that asked, and whose retry time has come; ``force``:
    rebuild even an unchanged store (the files are still left alone when equal)."""
    with ctx.transaction() as session:
        names = [nodes.get_node(session, fqdn).fqdn] if fqdn else \
            [n.fqdn for n in nodes.list_nodes(session)]
        # Read once per run, not per node (most of an unchanged node's cost): a CRL that
        # arrives during the run changes those nodes' inputs, so the next tick takes it.
        catalogue = Catalogue.load(session)
    return [_publish_one(ctx, name, passphrase, catalogue, force=force, due_only=due_only)
            for name in names]


def _publish_one(ctx: ServiceContext, fqdn: str, passphrase: bytes | None,
                 catalogue: Catalogue, *, force: bool, due_only: bool) -> NodeOutcome:
    now = ctx.clock()
    try:
        with ctx.transaction() as session:
            node = nodes.get_node(session, fqdn, for_update=True)
            material = _material(session, catalogue, node, ctx.settings, now)
            gaps = [g.view() | {"key": g.key} for g in material.gaps]
            changed = material.inputs != node.published_inputs
            asked = node.publish_due_at is not None and node.publish_due_at <= now
            if due_only:  # the tick: a failed node waits for its retry time
                wanted = asked or (changed and node.publish_error is None)
            else:  # a person: also a failed node at once (they may have mended the cause)
                wanted = force or changed or asked or node.publish_error is not None
            if not wanted:
                node.coverage_gaps = gaps
                return NodeOutcome(fqdn, "skipped", node.published_generation, gaps=gaps)
            content = store_files(_inputs(session, catalogue, node, material, passphrase),
                                  now)
            store = NodeStore(store_root(ctx.settings, node), keep=node.keep_generations)
            outcome = store.publish(content)
            node.published_at = now if outcome.changed else node.published_at or now
            node.published_generation = outcome.generation
            node.published_digest, node.published_inputs = content.digest, material.inputs
            node.publish_due_at = node.publish_error = node.publish_reason = None
            node.publish_attempts, node.coverage_gaps = 0, gaps
            state = "published" if outcome.changed else "unchanged"
            if outcome.changed:
                ctx.audit(session, "store.publish", f"node:{fqdn}",
                          {"generation": outcome.generation, "digest": content.digest,
                           "reason": node.publish_reason or "inputs changed",
                           "gaps": len(gaps)})
            log.info("store of %s: %s generation %s (%d bytes), %d gap(s)", fqdn, state,
                     outcome.generation, outcome.bytes_written, len(gaps))
            return NodeOutcome(fqdn, state, outcome.generation, outcome.bytes_written, gaps,
                               path=str(outcome.path))
    except PkiqError as exc:
        return _failed(ctx, fqdn, str(exc), now)
    except OSError as exc:  # a store folder pkiq cannot even open
        return _failed(ctx, fqdn, f"{exc.strerror or exc}: {exc.filename or ''}", now)


def _failed(ctx: ServiceContext, fqdn: str, error: str, now: dt.datetime) -> NodeOutcome:
    """Record the failure and the next try; the store on disk is as it was."""
    log.warning("store of %s not published: %s", fqdn, error)
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn, for_update=True)
        node.publish_attempts += 1
        node.publish_error = error[:MAX_ERROR]
        node.publish_due_at = now + retry_delay(node.publish_attempts)
    return NodeOutcome(fqdn, "failed", error=error)


def _inputs(session, catalogue: Catalogue, node: ExpresswayNode, material: NodeMaterial,
            passphrase: bytes | None) -> StoreInputs:
    cred = material.credential
    cert = key_pem = None
    chain: list = []
    if cred is not None:
        if not passphrase:
            raise WrongPassphrase(f"the server key of {node.fqdn} is stored encrypted: set "
                                  "PKIQ_CA_PASSPHRASE_FILE for the process that publishes")
        cert = node_credentials.certificate(cred)
        chain = node_credentials.chain(cred) or catalogue.issuing_chain(cert)
        key_pem = node_credentials.private_key(cred, passphrase).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
    reason = node.publish_reason or "inputs changed"
    return StoreInputs(server_cert=cert, chain=tuple(chain), private_key_pem=key_pem,
                       trusted=tuple(material.trusted),
                       crls=tuple(crl_ders(session, material.crls)), reason=reason)


def rollback(ctx: ServiceContext, fqdn: str) -> dict:
    """Point the node's store back at its previous generation. It stays there until what the
    store is made of changes again (a new certificate, CRL or trusted CA), which publishes
    a new generation, or until ``publish --force``."""
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn, for_update=True)
        material = _material(session, Catalogue.load(session), node, ctx.settings,
                             ctx.clock())
        store = NodeStore(store_root(ctx.settings, node), keep=node.keep_generations)
        generation = store.rollback()
        node.published_generation, node.published_inputs = generation, material.inputs
        node.published_digest = (store.current_manifest() or {}).get("digest")
        node.publish_due_at = node.publish_reason = None
        ctx.audit(session, "store.rollback", f"node:{node.fqdn}", {"generation": generation})
        return {"node": node.fqdn, "generation": generation,
                "path": str(store_root(ctx.settings, node))}


def generations(ctx: ServiceContext, fqdn: str) -> dict:
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn)
        root = store_root(ctx.settings, node)
    store = NodeStore(root, keep=1)
    return {"node": fqdn, "path": str(root), "current": store.current_generation(),
            "generations": store.generations()}
