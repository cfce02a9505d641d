"""How pkiq reaches each node's REST API: address, administrator, password (sealed under the
service passphrase, or read from a file at each use), trust of the node's HTTPS certificate
(its trusted list plus the system CAs, or a fingerprint pinned by an explicit command), and
the endpoint names of its release.

Views never carry the password, sealed or clear: they say only where it comes from.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca import nodes, sealed
from ca.errors import BadInput, NotFound, WrongPassphrase
from ca.expressway_api import check_profile_value, profile
from ca.general_names import check_dns_name
from ca.models import ExpresswayNode, NodeApi
from ca.store_material import Catalogue
from ca.trust import fingerprint
from shell.expressway_client import NodeEndpoint, probe_certificate
from shell.settings import read_passphrase_file

from .context import ServiceContext

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_USERNAME = re.compile(r"^[^\s:]{1,128}$")


def _context(node: ExpresswayNode) -> str:
    return f"pkiq node api password {node.fqdn}"


@dataclass
class ApiChanges:
    """What ``pkiq node api set`` was given; None leaves a setting as it is."""

    address: str | None = None
    port: int | None = None
    username: str | None = None
    password: bytes | None = None
    password_file: str | None = None
    release: str | None = None
    endpoints: Mapping[str, str] | None = None
    crl_fetch_hours: int | None = None


def get_api(session: Session, node: ExpresswayNode, *, for_update: bool = False) -> NodeApi:
    query = select(NodeApi).where(NodeApi.node_id == node.id)
    if for_update:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise NotFound(f"node {node.fqdn} has no REST API settings: pkiq node api set "
                       f"{node.fqdn} --username USER --password-file FILE")
    return row


def api_view(node: ExpresswayNode, row: NodeApi) -> dict:
    password = ("sealed" if row.password_sealed else
                f"file {row.credentials_file}" if row.credentials_file else None)
    return {"node": node.fqdn, "address": row.address or node.fqdn, "port": row.port,
            "username": row.username, "password": password, "pin_sha256": row.pin_sha256,
            "tls": "pinned" if row.pin_sha256 else "trusted list + system CAs",
            "endpoints": profile(row.release, row.endpoints).view(),
            "overrides": dict(row.endpoints or {}), "crl_fetch_hours": row.crl_fetch_hours,
            "drift": row.drift or [],
            "drift_checked_at": row.drift_checked_at.isoformat()
            if row.drift_checked_at else None}


def set_api(ctx: ServiceContext, fqdn: str, changes: ApiChanges, *,
            passphrase: bytes | None) -> dict:
    now = ctx.clock()
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn, for_update=True)
        row = session.scalar(select(NodeApi).where(NodeApi.node_id == node.id)
                             .with_for_update())
        if row is None:
            row = NodeApi(node_id=node.id, port=443, release="x8.10", endpoints={},
                          crl_fetch_hours=26, drift=[], managed_cas=[], created_at=now)
            session.add(row)
        if changes.address is not None:
            row.address = _address(changes.address, node) if changes.address else None
        if changes.port is not None:
            if not 1 <= changes.port <= 65535:
                raise BadInput(f"port {changes.port}: a port is 1 to 65535")
            row.port = changes.port
        if changes.username is not None:
            if not _USERNAME.match(changes.username):
                raise BadInput("a username is 1 to 128 characters without spaces or ':'")
            row.username = changes.username
        if changes.password is not None:
            try:
                changes.password.decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput("the password is not UTF-8 text") from None
            if not passphrase:
                raise WrongPassphrase("the node's password is sealed under the service "
                                      "passphrase: set PKIQ_CA_PASSPHRASE_FILE")
            row.password_sealed = sealed.seal(changes.password, passphrase, _context(node))
            row.credentials_file = None
        if changes.password_file is not None:
            path = Path(changes.password_file).expanduser().absolute()
            _password_from_file(path, node.fqdn)  # readable now, and private
            row.credentials_file, row.password_sealed = str(path), None
        if changes.release is not None:
            profile(changes.release)  # known
            row.release = changes.release.lower()
        if changes.endpoints:
            merged = dict(row.endpoints or {})
            for key, value in changes.endpoints.items():
                merged[key] = check_profile_value(key, value)
            row.endpoints = merged
        if changes.crl_fetch_hours is not None:
            if not 0 <= changes.crl_fetch_hours <= 24 * 31:
                raise BadInput("--crl-fetch-within is whole hours from 0 (not checked) "
                               "to 744")
            row.crl_fetch_hours = changes.crl_fetch_hours
        if row.username is None:
            raise BadInput(f"node {node.fqdn}: give the administrator's --username")
        if changes.username is not None or changes.password is not None or \
                changes.password_file is not None:
            row.auth_refused_at = None  # new credentials: the drift check may try them
        row.updated_at = now
        session.flush()
        view = api_view(node, row)
        ctx.audit(session, "node.api.set", f"node:{node.fqdn}",
                  {k: view[k] for k in ("address", "port", "username", "password",
                                        "overrides", "crl_fetch_hours")})
        return view


def _address(value: str, node: ExpresswayNode) -> str:
    value = value.strip().lower()
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    check_dns_name(value)
    return value


def _password_from_file(path: Path, fqdn: str) -> str:
    """The first line of a regular file that only its owner may read (a password file
    readable by the group or others is refused, as ssh refuses such a key)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise BadInput(f"password file of node {fqdn}: {exc.strerror}: {path}") from None
    if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
        raise BadInput(f"password file {path} of node {fqdn} may be read by others "
                       f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 it")
    raw = read_passphrase_file(path, f"password file of node {fqdn}")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise BadInput(f"password file {path} of node {fqdn} is not UTF-8 text") from None


def show_api(ctx: ServiceContext, fqdn: str) -> dict:
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn)
        return api_view(node, get_api(session, node))


def remove_api(ctx: ServiceContext, fqdn: str) -> dict:
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn, for_update=True)
        row = get_api(session, node, for_update=True)
        session.delete(row)
        ctx.audit(session, "node.api.remove", f"node:{node.fqdn}", {})
        return {"node": node.fqdn, "removed": True}


def normal_fingerprint(value: str) -> str:
    """``AB:CD:...``, ``abcd...`` or ``sha256:...`` / ``SHA256=...`` as tools print them."""
    text = value.strip().lower()
    for prefix in ("sha256:", "sha256=", "sha256 fingerprint="):
        text = text.removeprefix(prefix)
    text = text.replace(":", "")
    if not _FINGERPRINT.match(text):
        raise BadInput(f"{value!r} is not a SHA-256 fingerprint (64 hex digits, colons "
                       "allowed)")
    return text


def pin(ctx: ServiceContext, fqdn: str, expected: str | None) -> dict:
    """Without ``expected``: show what the node presents, change nothing. With it: pin the
    presented certificate only if it is the one the operator read off the node's console
    (or ``--fingerprint`` was checked some other way); ``unpin`` with ``expected=""``."""
    with ctx.transaction() as session:
        node = nodes.get_node(session, fqdn)
        row = get_api(session, node)
        address, port = row.address or node.fqdn, row.port
    if expected == "":
        with ctx.transaction() as session:
            row = get_api(session, nodes.get_node(session, fqdn), for_update=True)
            row.pin_sha256, row.updated_at = None, ctx.clock()
            ctx.audit(session, "node.api.unpin", f"node:{fqdn}", {})
        return {"node": fqdn, "pinned": None}
    cert = probe_certificate(address, port, fqdn, ctx.settings.node_api_timeout)
    presented = fingerprint(cert)
    view = {"node": fqdn, "presented_sha256": presented,
            "subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.isoformat(), "pinned": None}
    if expected is None:
        return view
    wanted = normal_fingerprint(expected)
    if wanted != presented:
        raise BadInput(f"node {fqdn} presents SHA-256 {presented}, not {wanted}: nothing "
                       "pinned (someone in between, or the wrong node?)")
    with ctx.transaction() as session:
        row = get_api(session, nodes.get_node(session, fqdn), for_update=True)
        row.pin_sha256, row.updated_at = presented, ctx.clock()
        ctx.audit(session, "node.api.pin", f"node:{fqdn}", {"sha256": presented})
    view["pinned"] = presented
    return view


def endpoint_for(session: Session, ctx: ServiceContext, node: ExpresswayNode,
                 passphrase: bytes | None, catalogue: Catalogue,
                 extra_pins: tuple[str, ...] = ()) -> NodeEndpoint:
    """Everything a client needs for ``node``, the password opened for this call only."""
    row = get_api(session, node)
    if row.credentials_file:
        password = _password_from_file(Path(row.credentials_file), node.fqdn)
    elif row.password_sealed:
        if not passphrase:
            raise WrongPassphrase(f"the password of node {node.fqdn} is sealed under the "
                                  "service passphrase: set PKIQ_CA_PASSPHRASE_FILE for the "
                                  "process that pushes")
        password = sealed.unseal(row.password_sealed, passphrase, _context(node),
                                 f"the password of node {node.fqdn}").decode()
    else:
        raise BadInput(f"node {node.fqdn} has no password: pkiq node api set {node.fqdn} "
                       "--password-file FILE (or --password-stdin)")
    trusted, _missing = catalogue.trusted_for(node)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in trusted)
    pins = (row.pin_sha256, *extra_pins) if row.pin_sha256 else ()
    return NodeEndpoint(fqdn=node.fqdn, address=row.address or node.fqdn, port=row.port,
                        username=row.username or "", password=password,
                        profile=profile(row.release, row.endpoints), trusted_pem=pem,
                        pins=tuple(dict.fromkeys(pins)), timeout=ctx.settings.node_api_timeout)


def nodes_with_api(session: Session) -> list[ExpresswayNode]:
    return list(session.scalars(select(ExpresswayNode).join(
        NodeApi, NodeApi.node_id == ExpresswayNode.id).order_by(ExpresswayNode.fqdn)))


