"""``pkiq node``, ``pkiq cluster``, ``pkiq trustset``: the Expressway side, over
``service.nodes`` and ``service.stores``."""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from ca.authority import MAX_DAYS
from ca.expressway import MODELS, NODE_KEY_TYPES, UC_DOMAIN_FORMATS
from ca.nodes import NodeChanges
from ca.profiles import PROFILES
from service import jobs as job_service
from service import nodes as node_service
from service import stores as store_service

from .cli_common import (
    PARTIAL,
    emit,
    json_option,
    pass_service,
    passphrase_options,
    read_input,
    read_passphrase,
    warn,
)

CLUSTERED = [m for m in MODELS if m != "standalone"]


# ---------------------------------------------------------------- clusters

@click.group("cluster")
def cluster_group():
    """Expressway clusters: name, cluster FQDN, certificate model, rollouts."""


@cluster_group.command("add")
@click.argument("name")
@click.option("--fqdn", required=True, help="The cluster FQDN (in every peer's SANs).")
@click.option("--model", type=click.Choice(CLUSTERED), default="cluster-per-peer",
              show_default=True,
              help="A certificate per peer (CN = peer, SANs = peer + cluster), or one shared "
                   "certificate listing every peer.")
@json_option
@pass_service
def cluster_add(ctx, name, fqdn, model, as_json):
    """Register a cluster."""
    view = node_service.add_cluster(ctx, name, fqdn, model)
    emit(view, as_json, f"cluster {view['name']} ({view['fqdn']}, {view['model']}) added")


@cluster_group.command("list")
@json_option
@pass_service
def cluster_list(ctx, as_json):
    """Clusters and their peers."""
    rows = node_service.list_clusters(ctx)
    emit(rows, as_json, lambda: "\n".join(
        f"{c['name']:<20} {c['fqdn']:<40} {c['model']:<17} {', '.join(c['peers']) or '-'}"
        for c in rows) or "no clusters")


@cluster_group.command("show")
@click.argument("name")
@json_option
@pass_service
def cluster_show(ctx, name, as_json):
    """One cluster and its peers."""
    view = node_service.show_cluster(ctx, name)
    emit(view, as_json, lambda: _lines(view))


@cluster_group.command("remove")
@click.argument("name")
@json_option
@pass_service
def cluster_remove(ctx, name, as_json):
    """Forget a cluster that has no peers left."""
    view = node_service.remove_cluster(ctx, name)
    emit(view, as_json, f"cluster {view['name']} removed")


# ---------------------------------------------------------------- trusted sets

@click.group("trustset")
def trustset_group():
    """Named trusted CA lists for nodes: pkiq CAs and trusted CA list entries."""


_MEMBERS = click.argument("members", nargs=-1)
_MEMBER_HELP = ("MEMBERS: pkiq CA names (ca:NAME to be explicit; a CA brings its chain up to "
                "the root) or trusted CA list entries by id or fingerprint prefix.")


@trustset_group.command("create", epilog=_MEMBER_HELP)
@click.argument("name")
@_MEMBERS
@json_option
@pass_service
def trustset_create(ctx, name, members, as_json):
    """Create a trusted set."""
    view = node_service.create_set(ctx, name, list(members))
    emit(view, as_json, f"trusted set {view['name']}: {len(view['members'])} member(s)")


@trustset_group.command("add", epilog=_MEMBER_HELP)
@click.argument("name")
@click.argument("members", nargs=-1, required=True)
@json_option
@pass_service
def trustset_add(ctx, name, members, as_json):
    """Add members; every node holding the set is published again."""
    view = node_service.change_set(ctx, name, list(members), [])
    emit(view, as_json, f"trusted set {view['name']}: {len(view['members'])} member(s)")


@trustset_group.command("remove", epilog=_MEMBER_HELP)
@click.argument("name")
@click.argument("members", nargs=-1, required=True)
@json_option
@pass_service
def trustset_remove(ctx, name, members, as_json):
    """Remove members; every node holding the set is published again."""
    view = node_service.change_set(ctx, name, [], list(members))
    emit(view, as_json, f"trusted set {view['name']}: {len(view['members'])} member(s)")


@trustset_group.command("list")
@json_option
@pass_service
def trustset_list(ctx, as_json):
    """Trusted sets."""
    rows = node_service.list_sets(ctx)
    emit(rows, as_json, lambda: "\n".join(
        f"{r['name']:<24} {len(r['members'])} member(s)" for r in rows) or "no trusted sets")


@trustset_group.command("show")
@click.argument("name")
@json_option
@pass_service
def trustset_show(ctx, name, as_json):
    """A set's members and the certificates they stand for now."""
    view = node_service.show_set(ctx, name)
    emit(view, as_json, lambda: "\n".join(
        [f"trusted set {view['name']}"]
        + [f"  {c['sha256'][:16]}  {c['subject']}" for c in view["certificates"]]
        + [f"  missing: {m}" for m in view["missing"]]))


@trustset_group.command("delete")
@click.argument("name")
@json_option
@pass_service
def trustset_delete(ctx, name, as_json):
    """Delete a set no node holds."""
    view = node_service.remove_set(ctx, name)
    emit(view, as_json, f"trusted set {view['name']} deleted")


# ---------------------------------------------------------------- nodes

@click.group("node")
def node_group():
    """Expressway peers: names, CSRs, server certificates, stores, REST pushes."""


def _node_options(func):
    options = [
        click.option("--store-dir", help="Folder of the node's store (absolute; '' for the "
                     "default under the data directory)."),
        click.option("--keep", "keep_generations", type=click.IntRange(1, 100),
                     help="Store generations kept for rollback (default 5)."),
        click.option("--trusted-set", help="The node's trusted CA list ('' for pkiq's whole "
                     "trusted CA list)."),
        click.option("--uc-domain-format", type=click.Choice(UC_DOMAIN_FORMATS),
                     help="Expressway-E: SANs as collab-edge.DOMAIN or DOMAIN."),
        click.option("--uc-domain", "uc_domains", multiple=True,
                     help="Expressway-E: a Unified Communications domain (repeat)."),
        click.option("--phone-security-profile", "phone_security_profiles", multiple=True,
                     help="Expressway-C: a TLS phone security profile name, FQDN format "
                          "(repeat)."),
        click.option("--chat-node-alias", "chat_node_aliases", multiple=True,
                     help="A chat node alias (repeat)."),
        click.option("--cluster", help="The node's cluster ('' for none)."),
    ]
    for option in options:
        func = option(func)
    return func


def _changes(role, cluster, chat_node_aliases, phone_security_profiles, uc_domains,
             uc_domain_format, trusted_set, store_dir, keep_generations, *,
             clear=()) -> NodeChanges:
    def names(values, flag):
        return tuple(values) if values or flag in clear else None

    return NodeChanges(role=role, cluster=cluster,
                       chat_node_aliases=names(chat_node_aliases, "chat"),
                       phone_security_profiles=names(phone_security_profiles, "phone"),
                       uc_domains=names(uc_domains, "uc"), uc_domain_format=uc_domain_format,
                       trusted_set=trusted_set, store_dir=store_dir,
                       keep_generations=keep_generations)


@node_group.command("add")
@click.argument("fqdn")
@click.option("--role", type=click.Choice(["C", "E"], case_sensitive=False), required=True,
              help="Expressway-C (inside) or Expressway-E (edge).")
@_node_options
@json_option
@pass_service
def node_add(ctx, fqdn, role, as_json, **options):
    """Register an Expressway peer."""
    view = node_service.add_node(ctx, fqdn, _changes(role, **options))
    emit(view, as_json, f"node {view['fqdn']} (Expressway-{view['role']}) added")


@node_group.command("set")
@click.argument("fqdn")
@click.option("--role", type=click.Choice(["C", "E"], case_sensitive=False),
              help="Expressway-C or Expressway-E.")
@_node_options
@click.option("--clear", type=click.Choice(["chat", "phone", "uc"]), multiple=True,
              help="Empty a list: chat node aliases, phone security profiles, UC domains.")
@json_option
@pass_service
def node_set(ctx, fqdn, role, clear, as_json, **options):
    """Change a node; given lists replace the old ones."""
    view = node_service.update_node(ctx, fqdn, _changes(role, **options, clear=clear))
    emit(view, as_json, f"node {view['fqdn']} updated")


@node_group.command("list")
@click.option("--cluster", help="Only this cluster's peers.")
@json_option
@pass_service
def node_list(ctx, cluster, as_json):
    """Nodes, their certificates and their stores."""
    rows = node_service.list_nodes(ctx, cluster)

    def text():
        lines = []
        for n in rows:
            cert = n["certificate"]
            state = (f"cert {cert['serial']} until {cert['not_after'][:10]}" if cert
                     else "no certificate") + (", CSR in progress" if n["csr_in_progress"]
                                               else "")
            store = (f"gen {n['published_generation']}" if n["published_generation"]
                     else "not published") + (" FAILING" if n["publish_error"] else "") + (
                f", {len(n['coverage_gaps'])} gap(s)" if n["coverage_gaps"] else "")
            lines.append(f"{n['fqdn']:<36} {n['role']} {n['cluster'] or '-':<14} {state}; "
                         f"{store}")
        return "\n".join(lines) or "no nodes"
    emit(rows, as_json, text)


@node_group.command("show")
@click.argument("fqdn")
@json_option
@pass_service
def node_show(ctx, fqdn, as_json):
    """A node: names, the CSR names they make, certificate, store."""
    view = node_service.show_node(ctx, fqdn)
    emit(view, as_json, lambda: _lines(view))


@node_group.command("remove")
@click.argument("fqdn")
@click.option("--yes", is_flag=True, required=True,
              help="Confirm: the node's keys are forgotten (its store on disk is kept).")
@json_option
@pass_service
def node_remove(ctx, fqdn, yes, as_json):
    """Forget a node and its keys."""
    view = node_service.remove_node(ctx, fqdn)
    emit(view, as_json, f"node {view['fqdn']} removed; its store folder was left in place")


@node_group.command("csr")
@click.argument("fqdn")
@click.option("--generate", "action", flag_value="generate",
              help="Make a new key and CSR (one may be in progress per node).")
@click.option("--show", "action", flag_value="show", default=True,
              help="Print the CSR in progress (the default).")
@click.option("--decoded", is_flag=True, help="With --show: human-readable, not PEM.")
@click.option("--discard", "action", flag_value="discard", help="Drop the CSR in progress.")
@click.option("--key-type", type=click.Choice([*NODE_KEY_TYPES, "rsa8192"]),
              default="rsa4096", show_default=True,
              help="RSA 4096 as the guide recommends (8192 is refused: SIP TLS zones may "
                   "fail to become active).")
@click.option("--organization", "-O", help="Subject O.")
@click.option("--unit", "-OU", help="Subject OU.")
@click.option("--locality", "-L", help="Subject L.")
@click.option("--state", "-ST", help="Subject ST.")
@click.option("--country", "-C", help="Subject C (two letters).")
@click.option("--submit", "submit_ca", metavar="CA",
              help="Queue the CSR on the signing queue for this CA (after --generate, or "
                   "the one in progress); the certificate is paired with the node's key.")
@click.option("--ca", "ca_name", help="Same as --submit CA.")
@click.option("--profile", type=click.Choice(list(PROFILES)), default="webclientandserver",
              show_default=True, help="With --submit: the signing profile (serverAuth + "
              "clientAuth, for TLS verify mode).")
@click.option("--days", type=click.IntRange(1, MAX_DAYS), help="With --submit: validity.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the CSR (PEM) here.")
@passphrase_options(what="node keys (the service passphrase)")
@json_option
@pass_service
def node_csr(ctx, fqdn, action, decoded, key_type, organization, unit, locality, state,
             country, submit_ca, ca_name, profile, days, out, passphrase_file, passphrase_env,
             as_json):
    """The node's CSR: generate (key kept here, encrypted), show, discard, submit."""
    ca_name = submit_ca or ca_name
    if out is not None:  # an --out that cannot be written fails before a key is made
        from shell.files import check_target

        check_target(out)
    if ca_name:  # so does an unknown or handed-over CA
        job_service.check_ca(ctx, ca_name)
    if action == "discard":
        view = node_service.discard_csr(ctx, fqdn)
        return emit(view, as_json, f"CSR of {fqdn} discarded")
    if action == "generate":
        passphrase = read_passphrase(ctx, passphrase_file, passphrase_env,
                                     what="node keys (the service passphrase)")
        fields = {k: v for k, v in dict(organization=organization, unit=unit,
                                        locality=locality, state=state,
                                        country=country).items() if v}
        view = node_service.generate_csr(ctx, fqdn, key_type=key_type, passphrase=passphrase,
                                         subject_fields=fields)
    else:
        view = node_service.show_csr(ctx, fqdn, decoded=decoded)
    warn(view.get("warnings", []))
    if out is not None:
        from shell.files import write_atomic

        write_atomic(out, view["pem"].encode())
    if ca_name:
        job, warning = node_service.submit_csr(ctx, fqdn, ca_name=ca_name, profile=profile,
                                               requester=getpass.getuser(), days=days)
        warn([warning])
        view["job"] = job
    if as_json:
        return emit(view, True, "")
    if action == "show" and decoded:
        click.echo(view["text"])
    elif out is None:
        click.echo(view["pem"], nl=False)
    if action == "generate":
        click.echo(f"CSR for {fqdn}: {view['subject']}; SANs "
                   f"{', '.join(view['subject_alt_names'])}", err=True)
    if ca_name:
        job = view["job"]
        click.echo(f"job {job['id']} {job['state']} on CA {job['ca']}", err=True)


@node_group.command("upload")
@click.argument("fqdn")
@click.option("--cert", "cert_file", required=True, type=click.Path(path_type=Path),
              help="The server certificate (PEM or DER; a PEM file may carry its chain).")
@click.option("--key", "key_file", type=click.Path(path_type=Path),
              help="Its private key, unencrypted (not while a CSR is in progress: the CSR's "
                   "key is used then).")
@passphrase_options(what="node keys (the service passphrase)")
@json_option
@pass_service
def node_upload(ctx, fqdn, cert_file, key_file, passphrase_file, passphrase_env, as_json):
    """Install a server certificate made elsewhere (Microsoft CA, a third party)."""
    cert = read_input(cert_file)
    key = read_input(key_file) if key_file else None
    passphrase = read_passphrase(ctx, passphrase_file, passphrase_env,
                                 what="node keys (the service passphrase)")
    view = node_service.upload_certificate(ctx, fqdn, cert, key, passphrase=passphrase)
    warn(view["warnings"])
    emit(view, as_json, f"{fqdn}: certificate {view['serial']} ({view['subject']}) installed; "
         "its store is published by the next stores tick, or now with pkiq node publish")


@node_group.command("certs")
@click.argument("fqdn")
@json_option
@pass_service
def node_certs(ctx, fqdn, as_json):
    """The node's keys and certificates, newest first."""
    rows = node_service.certificates(ctx, fqdn)
    emit(rows, as_json, lambda: "\n".join(
        f"{r['id']:>5} {r['state']:<9} {r['source']:<9} {r['key']:<8} "
        f"{r.get('serial', '-')} {r.get('not_after', '') or ''}" for r in rows) or "none")


@node_group.command("check")
@click.argument("fqdn", required=False)
@json_option
@pass_service
def node_check(ctx, fqdn, as_json):
    """Coverage: every trusted CA of the node with a CRL valid for the headroom. Exit 9 when
    a node has gaps."""
    rows = store_service.check(ctx, fqdn)

    def text():
        lines = []
        for r in rows:
            head = (f"{r['node']}: {r['trusted']} trusted CA(s), {r['crls']} CRL(s), "
                    f"{'no ' if not r['certificate'] else ''}server certificate, "
                    f"{'up to date' if r['up_to_date'] else 'store not up to date'}")
            lines.append(head)
            lines += [f"  GAP {g['ca']}: {g['reason']} (since {g['since'][:16]}Z)"
                      for g in r["gaps"]]
        return "\n".join(lines) or "no nodes"
    emit(rows, as_json, text)
    if any(r["gaps"] for r in rows):  # a missing set member is a gap too
        click.get_current_context().exit(PARTIAL)


@node_group.command("publish")
@click.argument("fqdn", required=False)
@click.option("--force", is_flag=True, help="Rebuild even when nothing changed (identical "
              "files are still not written).")
@passphrase_options(what="node keys (the service passphrase)")
@json_option
@pass_service
def node_publish(ctx, fqdn, force, passphrase_file, passphrase_env, as_json):
    """Publish the store of one node, or of every node, now."""
    passphrase = read_passphrase(ctx, passphrase_file, passphrase_env,
                                 what="node keys (the service passphrase)")
    outcomes = [o.view() for o in store_service.publish(ctx, fqdn, passphrase=passphrase,
                                                        force=force)]

    def text():
        lines = []
        for o in outcomes:
            if o["state"] == "failed":
                lines.append(f"{o['node']}: FAILED: {o['error']}")
            else:
                lines.append(f"{o['node']}: {o['state']}, generation {o['generation']}"
                             + (f", {o['bytes_written']} bytes" if o["bytes_written"] else "")
                             + (f", {len(o['gaps'])} coverage gap(s)" if o["gaps"] else ""))
        return "\n".join(lines) or "no nodes"
    emit(outcomes, as_json, text)
    if any(o["state"] == "failed" for o in outcomes):
        click.get_current_context().exit(PARTIAL)


@node_group.command("rollback")
@click.argument("fqdn")
@json_option
@pass_service
def node_rollback(ctx, fqdn, as_json):
    """Point the node's store back at its previous generation."""
    view = store_service.rollback(ctx, fqdn)
    emit(view, as_json, f"{view['node']}: store back at generation {view['generation']} "
         f"({view['path']})")


@node_group.command("generations")
@click.argument("fqdn")
@json_option
@pass_service
def node_generations(ctx, fqdn, as_json):
    """The store generations kept on disk."""
    view = store_service.generations(ctx, fqdn)
    emit(view, as_json, lambda: f"{view['path']}: current {view['current']}, kept "
         f"{', '.join(map(str, view['generations'])) or 'none'}")


def _lines(view: dict, indent: str = "") -> str:
    out = []
    for key, value in view.items():
        if isinstance(value, dict):
            out.append(f"{indent}{key}:")
            out.append(_lines(value, indent + "  "))
        elif isinstance(value, list):
            shown = ", ".join(str(v) if not isinstance(v, dict) else
                              "; ".join(f"{k}={x}" for k, x in v.items()) for v in value)
            out.append(f"{indent}{key}: {shown or '-'}")
        else:
            out.append(f"{indent}{key}: {'-' if value is None else value}")
    return "\n".join(out)
