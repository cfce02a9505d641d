"""Pushing node stores to Expressways over REST, one peer at a time.

A rollout lists its peers in order and pushes to them one by one: each peer gets the CA
certificates of its trusted list that it lacks, then (when it differs) its own server
certificate and key, read back from the node and compared by fingerprint, then checked by a
TLS handshake to the node's HTTPS port, which must present the new certificate. Only then
does the next peer start: a failure stops the rollout where it is (the peers after it are
untouched, their jobs still queued) and ``resume`` goes on from that peer.

A server certificate takes effect on an Expressway only after a restart (the guide). pkiq
restarts a node only when the rollout was started with ``restart``; otherwise the rollout
pauses at that peer, says so, and ``resume`` checks the handshake again once an operator
restarted it.

Each peer's push is a row of its own (state, attempts, the store generation and digest it
pushed, the node's answer); a node that does not answer, or answers 5xx, is tried again
with a growing delay; a 4xx fails the push at once with the node's own message. No row,
log line or view holds a key or a password.

``advance`` never sleeps: it does what can be done now and returns; its callers (the CLI in
the foreground, a Celery task, the beat tick for lost messages) call again when
``next_try_at`` comes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ca import nodes
from ca.errors import BadInput, Conflict, NotFound, PkiqError
from ca.models import ExpresswayNode, PushJob, Rollout
from ca.store_material import Catalogue
from ca.trust import fingerprint, load_bundle
from shell.expressway_client import (
    NodeApi,
    NodeApiError,
    NodeEndpoint,
    NodeRefused,
    NodeUnreachable,
)
from shell.settings import Settings
from shell.stores import NodeStore

from . import node_api
from . import stores as store_service
from .context import ServiceContext

log = logging.getLogger("pkiq.push")
OPEN = ("running", "waiting", "paused", "stopped")
MAX_ERROR = 2000
RETRY_MAX = dt.timedelta(minutes=10)
STORE_FILES = ["server.pem", "chain.pem", "privkey.pem", "trusted-ca.pem", "manifest.json"]
Connector = Callable[[NodeEndpoint], NodeApi]


def retry_delay(first_seconds: int, attempts: int) -> dt.timedelta:
    return min(dt.timedelta(seconds=first_seconds) * (2 ** min(max(attempts - 1, 0), 16)),
               RETRY_MAX)


# ---------------------------------------------------------------- views

def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_view(job: PushJob) -> dict:
    return {"id": job.id, "rollout": job.rollout_id, "node": job.node.fqdn, "seq": job.seq,
            "state": job.state, "attempts": job.attempts, "error": job.error,
            "generation": job.generation, "digest": job.digest,
            "server_sha256": job.server_sha256, "result": job.result or {},
            "next_try_at": _iso(job.next_try_at), "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at)}


def rollout_view(session, rollout: Rollout) -> dict:
    jobs = _jobs(session, rollout)
    current = rollout.peers[rollout.position] if rollout.position < len(rollout.peers) \
        else None
    return {"id": rollout.id, "target": rollout.target, "state": rollout.state,
            "restart": rollout.restart, "reason": rollout.reason, "error": rollout.error,
            "peers": rollout.peers, "position": rollout.position, "current": current,
            "next_try_at": _iso(rollout.next_try_at), "created_at": _iso(rollout.created_at),
            "finished_at": _iso(rollout.finished_at), "jobs": [job_view(j) for j in jobs]}


def _jobs(session, rollout: Rollout) -> list[PushJob]:
    return list(session.scalars(select(PushJob).where(PushJob.rollout_id == rollout.id)
                                .order_by(PushJob.seq)))


# ---------------------------------------------------------------- starting and stopping

def _target_nodes(session, *, cluster: str | None, node: str | None,
                  first: str | None) -> tuple[str, list[ExpresswayNode]]:
    if (cluster is None) == (node is None):
        raise BadInput("roll out to a cluster or to one node")
    if node is not None:
        row = nodes.get_node(session, node)
        peers = [row]
        target = f"node:{row.fqdn}"
    else:
        row = nodes.get_cluster(session, cluster)
        peers = nodes.cluster_nodes(session, row)
        target = f"cluster:{row.name}"
        if not peers:
            raise BadInput(f"cluster {row.name} has no peers")
    if first is not None:
        wanted = nodes.get_node(session, first)
        if wanted not in peers:
            raise BadInput(f"node {wanted.fqdn} is not a peer of {target.split(':', 1)[1]}")
        peers = [wanted] + [p for p in peers if p is not wanted]
    for peer in peers:
        node_api.get_api(session, peer)  # every peer must be reachable before any starts
    return target, peers


def _open_rollouts_of(session, peers: list[ExpresswayNode]) -> Rollout | None:
    ids = [p.id for p in peers]
    return session.scalar(select(Rollout).join(PushJob, PushJob.rollout_id == Rollout.id)
                          .where(PushJob.node_id.in_(ids), Rollout.state.in_(OPEN)).limit(1))


def start(ctx: ServiceContext, *, cluster: str | None = None, node: str | None = None,
          restart: bool = False, first: str | None = None, reason: str | None = None) -> dict:
    """A new rollout: refused while another open one touches any of the same peers (two
    rollouts interleaving on one node would each verify the other's certificate)."""
    now = ctx.clock()
    with ctx.transaction() as session:
        target, peers = _target_nodes(session, cluster=cluster, node=node, first=first)
        busy = _open_rollouts_of(session, peers)
        if busy is not None:
            raise Conflict(f"rollout {busy.id} ({busy.target}) is {busy.state} and touches "
                           f"these peers: resume it (pkiq rollout resume {busy.id}) or cancel "
                           f"it (pkiq rollout cancel {busy.id}) first")
        rollout = Rollout(target=target, peers=[p.fqdn for p in peers], position=0,
                          state="running", restart=restart, reason=reason or "asked",
                          created_at=now, updated_at=now)
        session.add(rollout)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(f"{target} already has an open rollout") from None
        for seq, peer in enumerate(peers):
            session.add(PushJob(rollout_id=rollout.id, node_id=peer.id, seq=seq,
                                state="queued", attempts=0, result={}, created_at=now))
        session.flush()
        log.info("rollout %s of %s started: %s", rollout.id, target, ", ".join(rollout.peers))
        return rollout_view(session, rollout)


def find_open(ctx: ServiceContext, *, cluster: str | None = None, node: str | None = None
              ) -> int:
    with ctx.transaction() as session:
        target = f"cluster:{nodes.get_cluster(session, cluster).name}" if cluster else \
            f"node:{nodes.get_node(session, node).fqdn}"
        rollout = session.scalar(select(Rollout).where(Rollout.target == target,
                                                       Rollout.state.in_(OPEN)))
        if rollout is None:
            raise NotFound(f"{target} has no open rollout to resume")
        return rollout.id


def _get(session, rollout_id: int, *, for_update: bool = False) -> Rollout:
    query = select(Rollout).where(Rollout.id == rollout_id)
    if for_update:
        query = query.with_for_update()
    rollout = session.scalar(query)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}")
    return rollout


def resume(ctx: ServiceContext, rollout_id: int) -> dict:
    """Go on from the peer where the rollout stopped or paused: its push runs again (what
    the node already holds is not sent twice) and then the peers after it."""
    now = ctx.clock()
    with ctx.transaction() as session:
        rollout = _get(session, rollout_id, for_update=True)
        if rollout.state not in OPEN:
            raise Conflict(f"rollout {rollout.id} is {rollout.state}: nothing to resume")
        for job in _jobs(session, rollout):
            if job.seq >= rollout.position and job.state in ("failed", "verifying",
                                                              "retrying"):
                job.state, job.attempts, job.next_try_at = "queued", 0, None
        rollout.state, rollout.error, rollout.next_try_at = "running", None, None
        rollout.updated_at = now
        return rollout_view(session, rollout)


def cancel(ctx: ServiceContext, rollout_id: int) -> dict:
    now = ctx.clock()
    with ctx.transaction() as session:
        rollout = _get(session, rollout_id, for_update=True)
        if rollout.state not in OPEN:
            raise Conflict(f"rollout {rollout.id} is {rollout.state} already")
        for job in _jobs(session, rollout):
            if job.state not in ("done", "failed"):
                job.state, job.finished_at = "cancelled", now
        rollout.state, rollout.finished_at, rollout.updated_at = "cancelled", now, now
        return rollout_view(session, rollout)


def show(ctx: ServiceContext, rollout_id: int) -> dict:
    with ctx.transaction() as session:
        return rollout_view(session, _get(session, rollout_id))


def list_rollouts(ctx: ServiceContext, limit: int = 50) -> list[dict]:
    with ctx.transaction() as session:
        rows = session.scalars(select(Rollout).order_by(Rollout.id.desc()).limit(limit))
        return [rollout_view(session, r) for r in rows]


def due(ctx: ServiceContext, stale: dt.timedelta) -> list[int]:
    """Rollouts a worker should advance now: a retry whose time came, or a running one
    nobody has touched for ``stale`` (its worker died, its message was lost)."""
    now = ctx.clock()
    with ctx.transaction() as session:
        rows = session.scalars(select(Rollout).where(Rollout.state.in_(("running",
                                                                        "waiting"))))
        return [r.id for r in rows
                if (r.state == "waiting" and r.next_try_at and r.next_try_at <= now)
                or (r.state == "running" and now - r.updated_at >= stale)]


# ---------------------------------------------------------------- pushing

@dataclass
class PeerMaterial:
    """What one peer should hold, from its store's current generation."""

    generation: int
    digest: str | None
    server: x509.Certificate | None
    server_pem: bytes | None  # leaf and chain, as the node takes them
    key_pem: bytes | None = field(repr=False, default=None)
    trusted: list[x509.Certificate] = field(default_factory=list)
    managed: frozenset[str] = frozenset()  # CAs pkiq put there earlier (NodeApi.managed_cas)


def peer_material(ctx: ServiceContext, fqdn: str, passphrase: bytes | None) -> PeerMaterial:
    """The node's store, published first if what it is made of changed: a push sends
    exactly what the store holds, and says which generation that was."""
    outcome = store_service.publish(ctx, fqdn, passphrase=passphrase)[0]
    if outcome.state == "failed":
        raise PkiqError(f"the store of {fqdn} could not be published, so nothing is "
                        f"pushed: {outcome.error}")
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn)
        root = store_service.store_root(ctx.settings, node)
    store = NodeStore(root, keep=1)
    generation, files = store.read_current(STORE_FILES)
    manifest = store.current_manifest() or {}
    server = None
    if "server.pem" in files:
        server = x509.load_pem_x509_certificate(files["server.pem"])
    trusted = load_bundle(files["trusted-ca.pem"]) if "trusted-ca.pem" in files else []
    server_pem = None
    if server is not None:
        server_pem = files["server.pem"] + files.get("chain.pem", b"")
    return PeerMaterial(generation, manifest.get("digest"), server, server_pem,
                        files.get("privkey.pem"), _roots_first(trusted))


def _roots_first(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    return sorted(certs, key=lambda c: c.subject != c.issuer)


@dataclass
class PushOutcome:
    verified: bool
    restart_needed: bool
    result: dict


def push_peer(api: NodeApi, material: PeerMaterial, *, restart: bool,
              restart_wait: float, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> PushOutcome:
    """One peer: trusted CAs it lacks, then the server certificate and key if they differ,
    then read-back, then the handshake. Raises NodeApiError (a NodeUnreachable is worth a
    retry) or PkiqError."""
    calls = [("GET", "server"), ("POST", "server"), ("GET", "trusted"), ("POST", "trusted")]
    if restart:
        calls.append(("POST", "restart"))
    api.require(*calls)
    held_certs = api.trusted_certificates()
    held = {fingerprint(c) for c in held_certs}
    wanted = {fingerprint(c) for c in material.trusted}
    # CAs pkiq put there that the store no longer holds go first: Expressway keeps one CA
    # per subject, so a re-keyed CA's old certificate must leave before the new one comes
    # (the guide: delete the old one before appending the new one). Others' CAs stay.
    retired = [c for c in held_certs if fingerprint(c) in material.managed - wanted]
    if retired:
        api.require(("DELETE", "trusted_delete"))
    removed = []
    for cert in retired:
        api.remove_trusted(cert)
        removed.append(cert.subject.rfc4514_string())
    added = []
    for cert in material.trusted:
        if fingerprint(cert) not in held:
            api.add_trusted(cert)
            added.append(cert.subject.rfc4514_string())
    uploaded, warnings, restart_needed = False, [], False
    if material.server is not None:
        current = api.server_certificates()
        if not current or fingerprint(current[0]) != fingerprint(material.server):
            restart_needed, warnings = api.put_server(material.server_pem, material.key_pem)
            uploaded = True
    result = {"added_cas": added, "removed_cas": removed, "uploaded_server": uploaded,
              "warnings": warnings}
    _read_back(api, material, result, [fingerprint(c) for c in retired])
    if material.server is None:
        return PushOutcome(True, False, result | {"handshake": "no server certificate"})
    want = fingerprint(material.server)
    presented = fingerprint(api.presented_certificate())
    if presented != want and restart:
        api.restart()
        result["restarted"] = True
        presented = _wait_for(api, want, restart_wait, clock, sleep)
        _read_back(api, material, result, [fingerprint(c) for c in retired])
    result["presented_sha256"] = presented
    if presented == want:
        return PushOutcome(True, False, result | {"handshake": "presents the new certificate"})
    result["handshake"] = "presents the previous certificate until the node restarts"
    return PushOutcome(False, True, result)


def _read_back(api: NodeApi, material: PeerMaterial, result: dict,
               removed: list[str]) -> None:
    """What the node says it holds now must be what was pushed; anything else fails the
    push (not retried: the node took the upload and holds something else)."""
    held = {fingerprint(c) for c in api.trusted_certificates()}
    lacking = [c.subject.rfc4514_string() for c in material.trusted
               if fingerprint(c) not in held]
    if lacking:
        raise NodeRefused(f"{api.endpoint.where}: read-back: the trusted CA list still lacks "
                          f"{'; '.join(lacking)} after the upload")
    still = [fp for fp in removed if fp in held]
    if still:
        raise NodeRefused(f"{api.endpoint.where}: read-back: the trusted CA list still holds "
                          f"SHA-256 {', '.join(still)} after its removal")
    if material.server is not None:
        server = api.server_certificates()
        if not server or fingerprint(server[0]) != fingerprint(material.server):
            got = fingerprint(server[0]) if server else "nothing"
            raise NodeRefused(f"{api.endpoint.where}: read-back: the node holds server "
                              f"certificate SHA-256 {got}, not the pushed "
                              f"{fingerprint(material.server)}")
    result["read_back"] = "matches"


def _wait_for(api: NodeApi, want: str, limit: float, clock, sleep) -> str:
    """After a restart: the handshake again until it presents ``want`` or ``limit``
    seconds passed (a node down while restarting refuses connections meanwhile)."""
    deadline = clock() + limit
    presented = "nothing (restarting)"
    while True:
        try:
            presented = fingerprint(api.presented_certificate())
            if presented == want:
                return presented
        except NodeUnreachable:
            pass
        if clock() >= deadline:
            raise NodeUnreachable(f"{api.endpoint.where}: {limit:g} s after the restart "
                                  f"it presents {presented}, not the new certificate {want}")
        sleep(min(2.0, max(deadline - clock(), 0.05)))


# ---------------------------------------------------------------- advancing

@dataclass
class Step:
    rollout: int
    state: str
    node: str | None = None
    job: int | None = None
    message: str = ""


def advance(ctx: ServiceContext, rollout_id: int, *, passphrase: bytes | None,
            connector: Connector = NodeApi, sleep: Callable[[float], None] = time.sleep,
            monotonic: Callable[[], float] = time.monotonic,
            report: Callable[[Step], None] | None = None) -> dict:
    """Push to peers of the rollout until it is done, stops, pauses or must wait for a
    retry; returns its view. Safe to call from several processes: the peer's job is taken
    under the rollout's row lock, and a rollout being pushed by someone else is left."""
    stale = stale_after(ctx.settings)
    while True:
        claimed = _claim(ctx, rollout_id, stale)
        if claimed is None:
            break
        job_id, fqdn = claimed
        _tell(report, Step(rollout_id, "pushing", fqdn, job_id, f"pushing to {fqdn}"))
        try:
            material = peer_material(ctx, fqdn, passphrase)
            _record_material(ctx, job_id, material)
            with ctx.transaction() as session:
                node = nodes.get_node(session, fqdn)
                material.managed = frozenset(node_api.get_api(session, node).managed_cas or [])
                pins = (fingerprint(material.server),) if material.server else ()
                endpoint = node_api.endpoint_for(session, ctx, node, passphrase,
                                                 Catalogue.load(session), pins)
            with connector(endpoint) as api:
                outcome = push_peer(api, material, restart=_restart_of(ctx, rollout_id),
                                    restart_wait=ctx.settings.restart_wait_seconds,
                                    clock=monotonic, sleep=sleep)
        except NodeUnreachable as exc:
            step = _retry_or_fail(ctx, rollout_id, job_id, fqdn, str(exc))
            _tell(report, step)
            if step.state == "waiting":
                break
            continue
        except (NodeApiError, PkiqError) as exc:
            _tell(report, _fail(ctx, rollout_id, job_id, fqdn, str(exc)))
            continue
        _tell(report, _finish(ctx, rollout_id, job_id, fqdn, outcome, material))
    with ctx.transaction() as session:
        return rollout_view(session, _get(session, rollout_id))


def _tell(report, step: Step) -> None:
    if report is not None:
        report(step)


def stale_after(settings: Settings) -> dt.timedelta:
    """A push nobody finished in this long was left by a dead process."""
    return dt.timedelta(seconds=settings.restart_wait_seconds
                        + 20 * settings.node_api_timeout + 60)


def _restart_of(ctx: ServiceContext, rollout_id: int) -> bool:
    with ctx.transaction() as session:
        return _get(session, rollout_id).restart


def _claim(ctx: ServiceContext, rollout_id: int, stale: dt.timedelta
           ) -> tuple[int, str] | None:
    now = ctx.clock()
    with ctx.transaction() as session:
        rollout = _get(session, rollout_id, for_update=True)
        if rollout.state == "waiting" and rollout.next_try_at and rollout.next_try_at > now:
            return None
        if rollout.state not in ("running", "waiting"):
            return None
        if rollout.position >= len(rollout.peers):
            rollout.state, rollout.finished_at, rollout.updated_at = "done", now, now
            log.info("rollout %s of %s done", rollout.id, rollout.target)
            return None
        job = session.scalar(select(PushJob).where(PushJob.rollout_id == rollout.id,
                                                   PushJob.seq == rollout.position))
        if job.state == "running" and job.started_at and now - job.started_at < stale:
            return None  # another process is pushing it
        job.state, job.started_at, job.next_try_at = "running", now, None
        job.attempts += 1
        rollout.state, rollout.next_try_at, rollout.updated_at = "running", None, now
        return job.id, rollout.peers[rollout.position]


def _record_material(ctx: ServiceContext, job_id: int, material: PeerMaterial) -> None:
    with ctx.transaction() as session:
        job = session.get(PushJob, job_id)
        job.generation, job.digest = material.generation, material.digest
        job.server_sha256 = fingerprint(material.server) if material.server else None


def _retry_or_fail(ctx: ServiceContext, rollout_id: int, job_id: int, fqdn: str,
                   error: str) -> Step:
    now = ctx.clock()
    with ctx.transaction() as session:
        job = session.get(PushJob, job_id)
        if job.attempts < ctx.settings.push_attempts:
            rollout = _get(session, rollout_id, for_update=True)
            delay = retry_delay(ctx.settings.push_retry_seconds, job.attempts)
            job.state, job.error = "retrying", error[:MAX_ERROR]
            job.next_try_at = rollout.next_try_at = now + delay
            rollout.state, rollout.updated_at = "waiting", now
            log.warning("push %s to %s: attempt %d failed, next at %s: %s", job.id, fqdn,
                        job.attempts, job.next_try_at.isoformat(), error)
            return Step(rollout_id, "waiting", fqdn, job_id,
                        f"{fqdn}: attempt {job.attempts} failed ({error}); trying again at "
                        f"{job.next_try_at:%H:%M:%S}Z")
    return _fail(ctx, rollout_id, job_id, fqdn,
                 f"{error} (gave up after {ctx.settings.push_attempts} attempts)")


def _fail(ctx: ServiceContext, rollout_id: int, job_id: int, fqdn: str, error: str) -> Step:
    now = ctx.clock()
    with ctx.transaction() as session:
        rollout = _get(session, rollout_id, for_update=True)
        job = session.get(PushJob, job_id)
        job.state, job.error, job.finished_at = "failed", error[:MAX_ERROR], now
        untouched = rollout.peers[rollout.position + 1:]
        message = (f"stopped at {fqdn} (peer {rollout.position + 1} of "
                   f"{len(rollout.peers)}): {error}"
                   + (f"; not touched: {', '.join(untouched)}" if untouched else ""))
        rollout.state, rollout.updated_at = "stopped", now
        rollout.error = message[:MAX_ERROR]
    log.error("rollout %s stopped at %s: %s", rollout_id, fqdn, error)
    return Step(rollout_id, "stopped", fqdn, job_id, message)


def _finish(ctx: ServiceContext, rollout_id: int, job_id: int, fqdn: str,
            outcome: PushOutcome, material: PeerMaterial) -> Step:
    now = ctx.clock()
    with ctx.transaction() as session:
        rollout = _get(session, rollout_id, for_update=True)
        job = session.get(PushJob, job_id)
        job.result, job.error = outcome.result, None
        if outcome.verified:
            job.state, job.finished_at = "done", now
            rollout.position += 1
            rollout.updated_at = now
            node = nodes.get_node(session, fqdn)
            row = node_api.get_api(session, node, for_update=True)
            row.managed_cas = sorted(fingerprint(c) for c in material.trusted)
            if row.pin_sha256 and material.server is not None:
                # The node now presents the certificate pkiq pushed and verified: that is
                # the one to pin from here on.
                row.pin_sha256 = fingerprint(material.server)
            log.info("push %s to %s: verified (generation %s)", job.id, fqdn, job.generation)
            return Step(rollout_id, "verified", fqdn, job_id,
                        f"{fqdn}: verified, generation {job.generation}")
        job.state = "verifying"
        rollout.state, rollout.updated_at = "paused", now
        message = (f"paused at {fqdn}: the node holds the new server certificate but "
                         "presents the previous one until it restarts; restart it (pkiq "
                         f"node restart {fqdn}, or Maintenance > Restart options), then "
                   f"pkiq rollout resume {rollout_id}")
        rollout.error = message
        log.warning("rollout %s paused at %s: restart needed", rollout_id, fqdn)
        return Step(rollout_id, "paused", fqdn, job_id, message)


# ---------------------------------------------------------------- restart

def restart_node(ctx: ServiceContext, fqdn: str, *, passphrase: bytes | None,
                 connector: Connector = NodeApi) -> dict:
    """Restart one node now: only ever on an operator's explicit command (or a rollout
    started with ``restart``)."""
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn)
        endpoint = node_api.endpoint_for(session, ctx, node, passphrase,
                                         Catalogue.load(session))
    with connector(endpoint) as api:
        api.require(("POST", "restart"))
        api.restart()
    log.warning("node %s restarted on request", fqdn)
    return {"node": fqdn, "restarted": True}
