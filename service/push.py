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
import secrets
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
    Connector,
    NodeApi,
    NodeApiError,
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
            "error_code": rollout.error_code,
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
        # Two rollouts starting at once over a shared peer: the second waits here for the
        # first to commit, then finds it.
        session.scalars(select(ExpresswayNode.id).where(
            ExpresswayNode.id.in_([p.id for p in peers])).order_by(ExpresswayNode.id)
            .with_for_update()).all()
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
        ctx.audit(session, "rollout.start", target,
                  {"rollout": rollout.id, "peers": rollout.peers, "restart": restart})
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
                                                              "retrying", "running"):
                # a job still "running" was left by a process that died (or is taken over:
                # its claim no longer holds, so its outcome is dropped)
                job.state, job.attempts, job.next_try_at, job.claim = "queued", 0, None, None
        rollout.state, rollout.error, rollout.next_try_at = "running", None, None
        rollout.error_code = None
        rollout.updated_at = now
        ctx.audit(session, "rollout.resume", rollout.target, {"rollout": rollout.id})
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
        ctx.audit(session, "rollout.cancel", rollout.target, {"rollout": rollout.id})
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
              restart_wait: float, restarted: bool = False,
              on_restart: Callable[[], None] = lambda: None,
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> PushOutcome:
    """One peer: trusted CAs it lacks, then the server certificate and key if they differ,
    then read-back, then the handshake. Raises NodeApiError (a NodeUnreachable is worth a
    retry) or PkiqError. ``restarted``: an earlier attempt of this push restarted the node
    already; it is not restarted twice (each restart drops every call on the node), only
    waited for."""
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
        current = held_server(api.server_certificates(), material.server)
        if current is None or fingerprint(current) != fingerprint(material.server):
            restart_needed, warnings = api.put_server(material.server_pem, material.key_pem)
            uploaded = True
    result = {"added_cas": added, "removed_cas": removed, "uploaded_server": uploaded,
              "warnings": warnings}
    _read_back(api, material, result, [fingerprint(c) for c in retired])
    if material.server is None:
        return PushOutcome(True, False, result | {"handshake": "no server certificate"})
    want = fingerprint(material.server)
    if restart and restarted:
        presented = _wait_for(api, want, restart_wait, clock, sleep)
    else:
        presented = fingerprint(api.presented_certificate())
    if presented != want and restart:
        on_restart()
        try:
            api.restart()
        except NodeUnreachable as exc:  # the node may go down before it answers
            log.warning("%s: no answer to the restart (%s); waiting for it to come back",
                        api.endpoint.fqdn, exc)
        result["restarted"] = True
        presented = _wait_for(api, want, restart_wait, clock, sleep)
    if restart and (restarted or result.get("restarted")):
        _read_back(api, material, result, [fingerprint(c) for c in retired])
    result["presented_sha256"] = presented
    if presented == want:
        return PushOutcome(True, False, result | {"handshake": "presents the new certificate"})
    result["handshake"] = "presents the previous certificate until the node restarts"
    return PushOutcome(False, True, result)


def held_server(certs: list[x509.Certificate], want: x509.Certificate | None = None
                ) -> x509.Certificate | None:
    """The server certificate among what a node returns with its chain, in whatever order:
    the one pkiq pushed if it is there, else the first that is not a CA."""
    if want is not None:
        for cert in certs:
            if fingerprint(cert) == fingerprint(want):
                return cert
    for cert in certs:
        try:
            if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return cert
        except x509.ExtensionNotFound:
            return cert
    return certs[0] if certs else None


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
        server = held_server(api.server_certificates(), material.server)
        if server is None or fingerprint(server) != fingerprint(material.server):
            got = fingerprint(server) if server is not None else "nothing"
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
    retry; returns its view. Safe to call from several processes: a peer's job is claimed
    under the rollout's row lock with a token, a job someone else holds is left alone, and
    an outcome is recorded only by the holder of the current claim (a process whose push
    was taken over because it looked dead changes nothing when it finally returns)."""
    stale = stale_after(ctx.settings)
    while True:
        claimed = _claim(ctx, rollout_id, stale)
        if claimed is None:
            break
        _tell(report, Step(rollout_id, "pushing", claimed.fqdn, claimed.job,
                           f"pushing to {claimed.fqdn}"))
        try:
            outcome, material = _push(ctx, claimed, passphrase, connector, monotonic, sleep)
        except NodeUnreachable as exc:
            step = _retry_or_fail(ctx, claimed, str(exc), exc.exit_code)
            _tell(report, step)
            if step.state == "waiting":
                break
            continue
        except (NodeApiError, PkiqError) as exc:
            if isinstance(exc, NodeRefused) and exc.status == 401:
                _credentials_refused(ctx, claimed.fqdn)
            _tell(report, _fail(ctx, claimed, str(exc), exc.exit_code))
            continue
        except Exception as exc:  # noqa: BLE001 - a bug must stop the rollout, not hang it
            log.exception("push %s to %s failed unexpectedly", claimed.job, claimed.fqdn)
            _tell(report, _fail(ctx, claimed, f"internal error: {type(exc).__name__}: "
                                f"{str(exc)[:300]}", 1))
            continue
        _tell(report, _finish(ctx, claimed, outcome, material))
    with ctx.transaction() as session:
        return rollout_view(session, _get(session, rollout_id))


def _push(ctx: ServiceContext, claimed: Claim, passphrase: bytes | None,
          connector: Connector, monotonic, sleep) -> tuple[PushOutcome, PeerMaterial]:
    material = peer_material(ctx, claimed.fqdn, passphrase)
    with ctx.transaction() as session:
        job = session.get(PushJob, claimed.job)
        job.generation, job.digest = material.generation, material.digest
        job.server_sha256 = fingerprint(material.server) if material.server else None
        restarted = job.restarted_at is not None
        restart = _get(session, claimed.rollout).restart
        node = nodes.get_node(session, claimed.fqdn)
        material.managed = frozenset(node_api.get_api(session, node).managed_cas or [])
        pins = (fingerprint(material.server),) if material.server else ()
        endpoint = node_api.endpoint_for(session, ctx, node, passphrase,
                                         Catalogue.load(session), pins)

    def restarting() -> None:
        with ctx.transaction() as session:
            session.get(PushJob, claimed.job).restarted_at = ctx.clock()

    with connector(endpoint) as api:
        outcome = push_peer(api, material, restart=restart, restarted=restarted,
                            on_restart=restarting,
                            restart_wait=ctx.settings.restart_wait_seconds,
                            clock=monotonic, sleep=sleep)
    return outcome, material


def _credentials_refused(ctx: ServiceContext, fqdn: str) -> None:
    """The drift check stops sending them (lockout) until ``node api set`` changes them."""
    with ctx.transaction() as session:
        node_api.get_api(session, nodes.get_node(session, fqdn),
                         for_update=True).auth_refused_at = ctx.clock()


def _tell(report, step: Step) -> None:
    if report is not None:
        report(step)


def stale_after(settings: Settings) -> dt.timedelta:
    """A push nobody finished in this long was left by a dead process."""
    return dt.timedelta(seconds=settings.restart_wait_seconds
                        + 20 * settings.node_api_timeout + 60)


@dataclass(frozen=True)
class Claim:
    rollout: int
    job: int
    fqdn: str
    token: str


def _claim(ctx: ServiceContext, rollout_id: int, stale: dt.timedelta) -> Claim | None:
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
        fqdn = rollout.peers[rollout.position]
        if job.state == "running":
            if job.started_at and now - job.started_at < stale:
                return None  # another process is pushing it
            if job.attempts >= ctx.settings.push_attempts:  # its holders kept dying
                _stop(rollout, job, fqdn, f"the process pushing it stopped answering "
                      f"{job.attempts} times", 9, now)
                return None
        token = secrets.token_hex(16)
        job.state, job.started_at, job.next_try_at, job.claim = "running", now, None, token
        job.attempts += 1
        rollout.state, rollout.next_try_at, rollout.updated_at = "running", None, now
        return Claim(rollout.id, job.id, fqdn, token)


def _owned(session, claim: Claim) -> tuple[Rollout, PushJob] | None:
    """The rollout and job, locked, if this claim still holds them; else None (cancelled,
    resumed or taken over meanwhile: the outcome is dropped)."""
    rollout = _get(session, claim.rollout, for_update=True)
    job = session.get(PushJob, claim.job)
    if rollout.state != "running" or job.state != "running" or job.claim != claim.token \
            or rollout.position != job.seq:
        log.warning("push %s to %s: the outcome is dropped, the rollout moved on meanwhile "
                    "(%s, job %s)", claim.job, claim.fqdn, rollout.state, job.state)
        return None
    return rollout, job


def _dropped(claim: Claim) -> Step:
    return Step(claim.rollout, "dropped", claim.fqdn, claim.job,
                f"{claim.fqdn}: the rollout was cancelled, resumed or taken over meanwhile")


def _retry_or_fail(ctx: ServiceContext, claim: Claim, error: str, code: int) -> Step:
    now = ctx.clock()
    with ctx.transaction() as session:
        owned = _owned(session, claim)
        if owned is None:
            return _dropped(claim)
        rollout, job = owned
        if job.attempts < ctx.settings.push_attempts:
            delay = retry_delay(ctx.settings.push_retry_seconds, job.attempts)
            job.state, job.error, job.claim = "retrying", error[:MAX_ERROR], None
            job.next_try_at = rollout.next_try_at = now + delay
            rollout.state, rollout.updated_at = "waiting", now
            log.warning("push %s to %s: attempt %d failed, next at %s: %s", job.id,
                        claim.fqdn, job.attempts, job.next_try_at.isoformat(), error)
            return Step(claim.rollout, "waiting", claim.fqdn, claim.job,
                        f"{claim.fqdn}: attempt {job.attempts} failed ({error}); trying "
                        f"again at {job.next_try_at:%H:%M:%S}Z")
    return _fail(ctx, claim, f"{error} (gave up after {ctx.settings.push_attempts} "
                 "attempts)", code)


def _fail(ctx: ServiceContext, claim: Claim, error: str, code: int) -> Step:
    now = ctx.clock()
    with ctx.transaction() as session:
        owned = _owned(session, claim)
        if owned is None:
            return _dropped(claim)
        message = _stop(*owned, claim.fqdn, error, code, now)
    return Step(claim.rollout, "stopped", claim.fqdn, claim.job, message)


def _stop(rollout: Rollout, job: PushJob, fqdn: str, error: str, code: int,
          now: dt.datetime) -> str:
    """The job failed: the rollout stops at it, the peers after it untouched."""
    job.state, job.error, job.finished_at, job.claim = "failed", error[:MAX_ERROR], now, None
    untouched = rollout.peers[rollout.position + 1:]
    message = (f"stopped at {fqdn} (peer {rollout.position + 1} of {len(rollout.peers)}): "
               f"{error}" + (f"; not touched: {', '.join(untouched)}" if untouched else ""))
    rollout.state, rollout.updated_at = "stopped", now
    rollout.error, rollout.error_code = message[:MAX_ERROR], code
    log.error("rollout %s stopped at %s: %s", rollout.id, fqdn, error)
    return message


def _finish(ctx: ServiceContext, claim: Claim, outcome: PushOutcome,
            material: PeerMaterial) -> Step:
    now = ctx.clock()
    with ctx.transaction() as session:
        owned = _owned(session, claim)
        if owned is None:
            return _dropped(claim)
        rollout, job = owned
        job.result, job.error, job.claim = outcome.result, None, None
        if outcome.verified:
            job.state, job.finished_at = "done", now
            rollout.position += 1
            rollout.updated_at = now
            node = nodes.get_node(session, claim.fqdn)
            row = node_api.get_api(session, node, for_update=True)
            row.managed_cas = sorted(fingerprint(c) for c in material.trusted)
            row.auth_refused_at = None
            if row.pin_sha256 and material.server is not None:
                # The node now presents the certificate pkiq pushed and verified: that is
                # the one to pin from here on.
                row.pin_sha256 = fingerprint(material.server)
            ctx.audit(session, "node.push", f"node:{claim.fqdn}",
                      {"rollout": claim.rollout, "generation": job.generation,
                       "server_sha256": job.server_sha256, **outcome.result})
            log.info("push %s to %s: verified (generation %s)", job.id, claim.fqdn,
                     job.generation)
            return Step(claim.rollout, "verified", claim.fqdn, claim.job,
                        f"{claim.fqdn}: verified, generation {job.generation}")
        job.state = "verifying"
        rollout.state, rollout.updated_at = "paused", now
        message = (f"paused at {claim.fqdn}: the node holds the new server certificate but "
                   "presents the previous one until it restarts; restart it (pkiq "
                   f"node restart {claim.fqdn} --yes, or Maintenance > Restart options), "
                   f"then pkiq rollout resume {claim.rollout}")
        rollout.error, rollout.error_code = message, 9
        log.warning("rollout %s paused at %s: restart needed", claim.rollout, claim.fqdn)
        return Step(claim.rollout, "paused", claim.fqdn, claim.job, message)


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
    with ctx.transaction() as session:
        ctx.audit(session, "node.restart", f"node:{fqdn}", {})
    log.warning("node %s restarted on request", fqdn)
    return {"node": fqdn, "restarted": True}
