"""``pkiq ca ...`` and ``pkiq cert ...``: certificate authorities and what they issued."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization

from ca import authority
from ca.errors import BadInput, WrongPassphrase
from ca.issuance import COPY_MODES
from ca.keys import KEY_TYPES
from ca.profiles import DEFAULT_PROFILE, PROFILES
from ca.x509text import render
from service import cas

from .cli_common import (
    Output,
    deliver,
    emit,
    json_option,
    output_options,
    pass_service,
    passphrase_options,
    read_input,
    read_passphrase,
    warn,
)


@click.group("ca")
def ca_group():
    """Create and run certificate authorities."""


def ca_option_decorators(func):
    """The [ CA_default ] settings, shared by ``ca create`` and ``ca set``; the parameter
    names are ``service.cas.CaChanges``'s fields."""
    options = [
        click.option("--policy", help="policy_anything, policy_match, or FIELD=RULE,... "
                     "(RULE: match, supplied, optional)."),
        click.option("--preserve-dn/--no-preserve-dn", default=None,
                     help="Keep the request's DN order and fields (OpenSSL 'preserve')."),
        click.option("--copy-extensions", type=click.Choice(COPY_MODES),
                     help="OpenSSL copy_extensions: none, copy or copyall."),
        click.option("--unique-subject/--no-unique-subject", default=None,
                     help="Refuse a second valid certificate for the same subject."),
        click.option("--default-days", type=click.IntRange(1, authority.MAX_DAYS),
                     help="Default validity."),
        click.option("--profile-days", multiple=True, metavar="PROFILE=DAYS",
                     help="Default validity for one profile (repeatable)."),
        click.option("--crl-hours", type=click.IntRange(1, authority.MAX_CRL_HOURS),
                     help="CRL lifetime (nextUpdate - thisUpdate)."),
        click.option("--crl-include-expired/--crl-drop-expired", default=None,
                     help="Keep revoked entries on the CRL after the certificate expired."),
        click.option("--clock-skew", type=click.IntRange(0, authority.MAX_CLOCK_SKEW),
                     metavar="SECONDS",
                     help="Backdate notBefore by this margin (default 300)."),
        click.option("--serial-mode", type=click.Choice(authority.SERIAL_MODES),
                     help="random (CSPRNG, 126 bits) or sequential (as OpenSSL's serial file)."),
        click.option("--crl-url", multiple=True, help="CRL distribution point URL (repeatable)."),
        click.option("--ca-issuers-url", multiple=True, help="AIA caIssuers URL (repeatable)."),
        click.option("--ocsp-url", multiple=True, help="AIA OCSP URL (repeatable)."),
        click.option("--approval", type=click.Choice(["auto", "manual"]),
                     help="Queued requests: signed at once (auto) or after approval (manual)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _ca_text(info: dict) -> str:
    policy = info["policy"]
    fields = ", ".join(f"{f}={r}" for f, r in policy["fields"])
    lines = [
        f"CA {info['name']}", f"  subject:          {info['subject']}",
        f"  key:              {info['key']}",
        f"  key at rest:      {info['key_protection']}" + (
            "" if info["key_protection_current"] else
            " (below today's work factor: re-encrypted when next unlocked, or by ca passwd)"),
        f"  issued by:        {info['parent'] or '(self-signed root)'}",
        f"  valid:            {info['not_before']} .. {info['not_after']}",
        f"  policy:           {policy['name']} ({fields})"
        + (" preserve" if policy.get("preserve") else ""),
        f"  copy_extensions:  {info['copy_extensions']}",
        f"  approval:         {info['approval']}",
        f"  unique_subject:   {'yes' if info['unique_subject'] else 'no'}",
        f"  default_days:     {info['default_days']}"
        + (f" {info['profile_days']}" if info["profile_days"] else ""),
        f"  serials:          {info['serial_mode']}"
        + (f" (next {info['next_serial']})" if info["next_serial"] else ""),
        f"  CRL:              number {info['crl_number']} issued, lifetime {info['crl_hours']} h,"
        f" expired entries {'kept' if info['crl_include_expired'] else 'dropped'}",
    ]
    if info["handed_over_at"]:
        lines.append(f"  handed over:      {info['handed_over_at']} to openssl ca in "
                     f"{info['handed_over_to']} (pkiq no longer signs with it)")
    for key, label in (("crl_urls", "CRL DP"), ("ca_issuers_urls", "caIssuers"),
                       ("ocsp_urls", "OCSP")):
        for url in info[key]:
            lines.append(f"  {label + ':':<18}{url}")
    return "\n".join(lines)


@ca_group.command("create")
@click.argument("name")
@click.option("--subject", required=True, help="'/C=GB/O=Example/CN=Example Root CA' or RFC 4514.")
@click.option("--key-type", type=click.Choice(KEY_TYPES), default="rsa4096", show_default=True,
              help="The CA's key: RSA (2048-4096 bits) or EC (P-256, P-384).")
@click.option("--days", type=click.IntRange(1, authority.MAX_DAYS), default=3650,
              show_default=True, help="Validity of the CA certificate.")
@click.option("--parent", help="Make a subordinate CA signed by this pkiq CA.")
@passphrase_options("parent", "the parent CA key")
@passphrase_options()
@ca_option_decorators
@json_option
@pass_service
def ca_create(ctx, name, subject, key_type, days, parent, parent_passphrase_file,
              parent_passphrase_env, passphrase_file, passphrase_env, as_json, **changes):
    """Create a root CA, or a subordinate CA with --parent."""
    passphrase = read_passphrase(ctx, passphrase_file, passphrase_env, what=f"CA {name}")
    parent_passphrase = read_passphrase(ctx, parent_passphrase_file, parent_passphrase_env,
                                        what=f"CA {parent}") if parent else None
    info, warnings = cas.create_ca(ctx, name=name, subject=subject, key_type=key_type,
                                   days=days, passphrase=passphrase,
                                   changes=cas.CaChanges(**changes), parent=parent,
                                   parent_passphrase=parent_passphrase)
    warn(warnings)
    emit(info, as_json, lambda: f"created {_ca_text(info)}")


@ca_group.command("set")
@click.argument("name")
@ca_option_decorators
@json_option
@pass_service
def ca_set(ctx, name, as_json, **changes):
    """Change a CA's settings (policy, copy_extensions, validity, URLs...)."""
    info = cas.configure_ca(ctx, name, cas.CaChanges(**changes))
    emit(info, as_json, lambda: _ca_text(info))


@ca_group.command("list")
@json_option
@pass_service
def ca_list(ctx, as_json):
    """List the CAs in the database."""
    rows = cas.list_cas(ctx)
    emit(rows, as_json, lambda: "\n".join(
        f"{r['name']:<20} {r['key']:<9} until {r['not_after'][:10]}  {r['subject']}"
        + ("  (handed over to openssl ca)" if r["handed_over_at"] else "")
        for r in rows) or "no CA yet: pkiq ca create NAME --subject ...")


@ca_group.command("show")
@click.argument("name")
@click.option("--pem", is_flag=True, help="Print the CA certificate in PEM.")
@json_option
@pass_service
def ca_show(ctx, name, pem, as_json):
    """Show one CA's certificate and settings."""
    info, certificate = cas.show_ca(ctx, name)
    if pem:
        click.echo(certificate.public_bytes(serialization.Encoding.PEM).decode(), nl=False)
        return
    emit(info, as_json, lambda: _ca_text(info))


@ca_group.command("sign")
@click.argument("name")
@click.argument("csr", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--profile", type=click.Choice(list(PROFILES)), default=DEFAULT_PROFILE,
              show_default=True, help="What the certificate is for (extensions, validity).")
@click.option("--days", type=click.IntRange(1, authority.MAX_DAYS),
              help="Validity (default: profile, then CA).")
@click.option("--md", help="Digest: sha256 (default; sha384 for P-384 CAs), sha384 or sha512. "
              "SHA-1 is refused.")
@output_options("certificate")
@passphrase_options()
@json_option
@pass_service
def ca_sign(ctx, name, csr, profile, days, md, out, der, passphrase_file, passphrase_env,
            as_json):
    """Sign a certificate request (PEM or DER) with CA NAME, at once (no queue)."""
    with Output(out, der) as output:
        data = read_input(csr)
        issued = cas.sign_request(ctx, name, data, profile=profile, days=days, md=md,
                                  passphrase=read_passphrase(ctx, passphrase_file,
                                                             passphrase_env, what=f"CA {name}"),
                                  before_commit=output.stage)
        warn(issued.warnings)
        info = issued.info
        deliver(output, issued.certificate, info, as_json,
                f"issued serial {info['serial']} for {info['subject']}, valid until "
                f"{info['not_after']}", issued=f"certificate serial {info['serial']} of CA {name}",
                recover=_again("cert", "get", info["serial"], "--ca", name, out=out, der=der))


def _again(*args: str, out: Path | None, der: bool) -> str:
    """The command that fetches again what was issued but could not be written."""
    words = ["pkiq", *args, *(["--der"] if der else []), "--out", str(out)]
    return " ".join(shlex.quote(word) for word in words)


@ca_group.command("revoke")
@click.argument("name")
@click.argument("serial")
@click.option("--reason", default="unspecified", show_default=True,
              help="RFC 5280 reason: keyCompromise, CACompromise, affiliationChanged, "
                   "superseded, cessationOfOperation, certificateHold, privilegeWithdrawn...")
@click.option("--invalidity-date", help="When the key is known or suspected to have been "
              "compromised (ISO 8601, UTC).")
@json_option
@pass_service
def ca_revoke(ctx, name, serial, reason, invalidity_date, as_json):
    """Revoke a certificate (it appears on the next CRL: run gencrl)."""
    info = cas.revoke(ctx, name, serial, reason=reason,
                      invalidity_date=cas.parse_time(invalidity_date))
    emit(info, as_json, f"revoked {info['serial']} ({info['reason']}) {info['subject']}")


@ca_group.command("status")
@click.argument("name")
@click.argument("serial")
@json_option
@pass_service
def ca_status(ctx, name, serial, as_json):
    """Status of a serial, as 'openssl ca -status': Valid, Revoked or Expired."""
    info, state = cas.status(ctx, name, serial)
    emit(info, as_json, f"{info['serial']}={state} ({state[0]})")


@ca_group.command("updatedb")
@click.argument("name")
@json_option
@pass_service
def ca_updatedb(ctx, name, as_json):
    """Mark valid certificates past their notAfter as expired (openssl ca -updatedb)."""
    count = cas.update_db(ctx, name)
    emit({"expired": count}, as_json, f"{count} certificate(s) marked expired")


@ca_group.command("release-hold")
@click.argument("name")
@click.argument("serial")
@json_option
@pass_service
def ca_release_hold(ctx, name, serial, as_json):
    """Take a certificate off hold (certificateHold only): it leaves the next CRL."""
    info = cas.release_hold(ctx, name, serial)
    emit(info, as_json, f"released {info['serial']}: {info['status']}; run gencrl to publish")


def _deliver_crl(output: Output, result: cas.CrlResult, as_json: bool, **issued) -> None:
    info = result.info
    deliver(output, result.crl, info, as_json,
            f"CRL {info['crl_number']} with {info['entries']} entries, next update "
            f"{info['next_update']}", **issued)


@ca_group.command("gencrl")
@click.argument("name")
@output_options("CRL")
@passphrase_options()
@json_option
@pass_service
def ca_gencrl(ctx, name, out, der, passphrase_file, passphrase_env, as_json):
    """Issue the CA's next CRL (the CRL number always increases)."""
    with Output(out, der) as output:
        passphrase = read_passphrase(ctx, passphrase_file, passphrase_env, what=f"CA {name}")
        result = cas.generate_crl(ctx, name, passphrase=passphrase, before_commit=output.stage)
        warn(list(result.warnings))
        number = result.info["crl_number"]
        _deliver_crl(output, result, as_json, issued=f"CRL number {number} of CA {name}",
                     recover=_again("ca", "crl", name, out=out, der=der))


@ca_group.command("ocsp-responders")
@passphrase_options()
@json_option
@pass_service
def ca_ocsp_responders(ctx, passphrase_file, passphrase_env, as_json):
    """Issue OCSP responder certificates to the CAs that need one, now (beat does it too).

    A CA needs one when it has none valid, or less than half of its current one's life is
    left. Their keys are encrypted under the passphrase given (the CAs' own)."""
    from service import ocsp

    passphrase = read_passphrase(ctx, passphrase_file, passphrase_env, what="the CAs")
    outcomes = [dataclasses.asdict(o) for o in ocsp.renew_responders(ctx,
                                                                      passphrase=passphrase)]
    emit(outcomes, as_json, lambda: "\n".join(
        f"{o['ca']}: " + (f"responder {o['serial']} issued ({o['reason']})" if o["serial"]
                          else f"FAILED: {o['error']}") for o in outcomes)
        or "every CA has a current OCSP responder")
    if any(o["error"] for o in outcomes):
        raise SystemExit(1)


@ca_group.command("passwd")
@click.argument("name")
@passphrase_options("new", "the CA key from now on")
@passphrase_options()
@json_option
@pass_service
def ca_passwd(ctx, name, new_passphrase_file, new_passphrase_env, passphrase_file,
              passphrase_env, as_json):
    """Change the passphrase of CA NAME's key (re-encrypted at today's work factor).

    The current passphrase comes as for every command; the new one only from
    --new-passphrase-file or --new-passphrase-env (at least 12 characters)."""
    passphrase = read_passphrase(ctx, passphrase_file, passphrase_env, what=f"CA {name}")
    if new_passphrase_file is None and new_passphrase_env is None:
        raise WrongPassphrase("give the new passphrase with --new-passphrase-file FILE or "
                              "--new-passphrase-env VAR")
    new_passphrase = read_passphrase(ctx, new_passphrase_file, new_passphrase_env,
                                     what=f"CA {name} from now on", default=False)
    info = cas.change_passphrase(ctx, name, passphrase=passphrase,
                                 new_passphrase=new_passphrase)
    warn(info["notes"])
    emit(info, as_json, f"CA {name}: passphrase changed, key re-encrypted "
         f"({info['key_protection']}). Running workers keep the key they hold; give them the "
         "new passphrase (PKIQ_CA_PASSPHRASE_FILE) before they restart")


@ca_group.command("crl")
@click.argument("name")
@output_options("CRL")
@json_option
@pass_service
def ca_crl(ctx, name, out, der, as_json):
    """Print or save the CA's latest CRL (as issued by gencrl; nothing is signed)."""
    output = Output(out, der)
    _deliver_crl(output, cas.latest_crl(ctx, name), as_json)


@ca_group.command("import-openssl")
@click.argument("args", nargs=-1, required=True, metavar="NAME FOLDER")
@click.option("--name", "old_name", metavar="NAME",
              help="Deprecated (give NAME first, as every 'pkiq ca' command does); kept for "
                   "one release.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The openssl config (default: openssl.cnf / openssl_local.cfg in FOLDER).")
@passphrase_options("import", "private/cakey.pem")
@passphrase_options()
@json_option
@pass_service
def ca_import(ctx, args, old_name, config, import_passphrase_file, import_passphrase_env,
              passphrase_file, passphrase_env, as_json):
    """Adopt an OpenSSL demoCA in FOLDER as the new pkiq CA NAME: cacert, key, index.txt,
    serial, crlnumber, newcerts, config."""
    name, folder = _import_arguments(args, old_name)
    import_pass = None
    if import_passphrase_file or import_passphrase_env:
        import_pass = read_passphrase(ctx, import_passphrase_file, import_passphrase_env,
                                      what="private/cakey.pem", default=False)
    passphrase = read_passphrase(ctx, passphrase_file, passphrase_env, what=f"CA {name}")
    info = cas.import_openssl(ctx, folder, name=name, config=config,
                              import_passphrase=import_pass, passphrase=passphrase)
    counts = info["imported"]
    warn(info["notes"])
    emit(info, as_json, lambda: f"imported {counts['V']} valid, {counts['R']} revoked, "
         f"{counts['E']} expired entries\n{_ca_text(info)}")


def _import_arguments(args: tuple[str, ...], old_name: str | None) -> tuple[str, Path]:
    """NAME FOLDER, as every ``pkiq ca`` command names its CA first; the earlier
    ``FOLDER --name NAME`` still works, with a warning, for one release."""
    if old_name is not None:
        if len(args) != 1:
            raise click.UsageError("with --name give only FOLDER (better: NAME FOLDER)")
        warn(["'import-openssl FOLDER --name NAME' is deprecated: use "
              f"'pkiq ca import-openssl {old_name} {args[0]}'"])
        name, folder = old_name, args[0]
    elif len(args) != 2:
        raise click.UsageError("give the new CA's NAME, then the demoCA FOLDER")
    else:
        name, folder = args
    path = Path(folder)
    if not path.is_dir():
        raise click.BadParameter(f"{folder} is not a folder", param_hint="FOLDER")
    return name, path


@ca_group.command("export-openssl")
@click.argument("name")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--handover", is_flag=True,
              help="Hand the CA over to openssl ca: pkiq stops signing with it, revoking and "
                   "renewing its CRL (openssl then owns index, serial and crlnumber).")
@json_option
@pass_service
def ca_export(ctx, name, folder, handover, as_json):
    """Write a demoCA that 'openssl ca' 3.x keeps using (the key stays encrypted)."""
    info = cas.export_openssl(ctx, name, folder, handover=handover)
    warn(info["notes"])
    said = f"wrote {folder}: openssl ca -config {folder / 'openssl.cnf'} -passin env:VAR ..."
    if handover:
        said += (f"\nCA {name} is openssl's now: pkiq no longer signs with it, revokes or "
                 "renews its CRL")
    emit(info, as_json, said)


# ====================================================================== cert

@click.group("cert")
def cert_group():
    """Look up issued certificates."""


@cert_group.command("show")
@click.argument("serial")
@click.option("--ca", "ca_name", help="The issuing CA (needed if the serial is ambiguous).")
@json_option
@pass_service
def cert_show(ctx, serial, ca_name, as_json):
    """Show an issued certificate's index entry and contents."""
    info, decoded = cas.show_certificate(ctx, serial, ca_name)
    if decoded is None:
        emit(info, as_json, "\n".join(f"{k}: {v}" for k, v in info.items()))
        return
    emit(info, as_json, lambda: f"status: {info['status']}"
         + (f" ({info['reason']}, {info['revoked_at']})" if info["revoked_at"] else "")
         + f"\nca: {info['ca']}\nprofile: {info['profile']}\n{render(decoded)}")


@cert_group.command("get")
@click.argument("serial")
@click.option("--ca", "ca_name", help="The issuing CA (needed if the serial is ambiguous).")
@click.option("--chain", is_flag=True, help="Append the issuing CA chain (PEM only).")
@output_options("certificate")
@pass_service
def cert_get(ctx, serial, ca_name, chain, der, out):
    """Print or save an issued certificate, optionally with its chain."""
    if chain and der:
        raise BadInput("--chain needs PEM: DER holds one certificate")
    output = Output(out, der)
    certificates = cas.certificate_with_chain(ctx, serial, ca_name, chain=chain)
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    output.write(b"".join(c.public_bytes(encoding) for c in certificates))
