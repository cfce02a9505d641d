"""The ``pkiq`` command line: a thin shell over the ``ca`` domain.

Exit codes: 0 success, 1 internal error, 2 usage error, 3 unreadable input, 4 refused by
policy, 5 not found, 6 missing or wrong passphrase, 7 conflict with the database,
8 database unreachable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import OperationalError

from ca import authority
from ca.errors import BadInput, NotFound, PkiqError, WrongPassphrase
from ca.issuance import COPY_MODES, CaUrls
from ca.keys import KEY_TYPES
from ca.names import parse_name
from ca.openssl_io import adopt, read_democa, render_democa
from ca.policy import Policy
from ca.profiles import DEFAULT_PROFILE, PROFILES
from ca.x509text import MAX_FILE_BYTES, Decoded, decode_all, describe, render

from .db import DatabaseUnavailable, make_engine, migrate, session_factory, transaction
from .files import Output, write_atomic, write_tree
from .settings import Settings


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class App:
    """What every command needs, made on first use (no database for ``x509`` commands)."""

    def __init__(self, settings: Settings | None = None,
                 clock: Callable[[], dt.datetime] = utc_now):
        self.settings = settings or Settings()
        self.clock = clock
        self._engine = None
        self._factory = None

    @property
    def sessions(self):
        if self._factory is None:
            self._engine = make_engine(self.settings.effective_database_url)
            migrate(self._engine)
            self._factory = session_factory(self._engine)
        return self._factory

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._factory = None

    def transaction(self):
        return transaction(self.sessions)


class PkiqGroup(click.Group):
    """Turns domain errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PkiqError as exc:
            _fail(ctx, str(exc), exc.exit_code)
        except OperationalError as exc:
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            unreachable = any(word in detail.lower() for word in (
                "connect", "connection", "unable to open", "timeout", "server closed"))
            _fail(ctx, f"database error: {detail}",
                  DatabaseUnavailable.exit_code if unreachable else 1)
        except OSError as exc:
            _fail(ctx, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 3)


def _fail(ctx, message: str, code: int):
    click.echo(f"pkiq: error: {message}", err=True)
    ctx.exit(code)


def _emit(data, as_json: bool, text: str | Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text() if callable(text) else text)


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        click.echo(f"pkiq: warning: {warning}", err=True)


def _read_input(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise BadInput(f"{path} is {size} bytes; pkiq reads at most {MAX_FILE_BYTES}")
    return path.read_bytes()


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def passphrase_options(prefix: str = "", what: str = "the CA key"):
    dash = f"{prefix}-" if prefix else ""
    under = f"{prefix}_" if prefix else ""

    def decorate(func):
        func = click.option(f"--{dash}passphrase-env", f"{under}passphrase_env", metavar="VAR",
                            help=f"Environment variable holding the passphrase of {what}.")(func)
        return click.option(f"--{dash}passphrase-file", f"{under}passphrase_file",
                            type=click.Path(dir_okay=False, path_type=Path),
                            help=f"File whose first line is the passphrase of {what}.")(func)
    return decorate


def read_passphrase(app: App, file: Path | None, env: str | None, *, what: str,
                    default_env: bool = True) -> bytes:
    """From a file (first line, as ``openssl -passin file:``), a named variable, or
    PKIQ_CA_PASSPHRASE. Never from the command line, where ``ps`` would show it."""
    if file is not None:
        try:
            first = file.read_bytes()[:4096].split(b"\n", 1)[0].removesuffix(b"\r")
        except OSError as exc:
            raise BadInput(f"cannot read passphrase file {file}: {exc.strerror}") from None
        if not first:
            raise WrongPassphrase(f"passphrase file {file} is empty")
        return first
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise WrongPassphrase(f"environment variable {env} (passphrase of {what}) is not set")
        return value.encode()
    if default_env and app.settings.ca_passphrase:
        return app.settings.ca_passphrase.encode()
    raise WrongPassphrase(f"{what} needs a passphrase: use --passphrase-file, --passphrase-env "
                          "or PKIQ_CA_PASSPHRASE")


@click.group(cls=PkiqGroup)
@click.version_option(package_name="pkiq")
@click.pass_context
def cli(ctx):
    """pkiq: a private CA with OpenSSL's semantics, for Expressway and any TLS estate."""
    if ctx.obj is None:
        ctx.obj = App()


# ====================================================================== ca

@cli.group("ca")
def ca_group():
    """Create and run certificate authorities."""


def ca_option_decorators(func):
    """The [ CA_default ] settings, shared by ``ca create`` and ``ca set``."""
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


def _options(base: authority.CaOptions, kw: dict) -> authority.CaOptions:
    changes = {}
    if kw["policy"] is not None or kw["preserve_dn"] is not None:
        preserve = kw["preserve_dn"] if kw["preserve_dn"] is not None else base.policy.preserve
        policy = Policy.parse(kw["policy"], preserve) if kw["policy"] else dataclasses.replace(
            base.policy, preserve=preserve)
        changes["policy"] = policy
    for key, field in (("copy_extensions", "copy_extensions"), ("unique_subject",
                       "unique_subject"), ("default_days", "default_days"),
                       ("crl_hours", "crl_hours"), ("crl_include_expired", "crl_include_expired"),
                       ("clock_skew", "clock_skew_seconds"), ("serial_mode", "serial_mode"),
                       ("approval", "approval")):
        if kw[key] is not None:
            changes[field] = kw[key]
    if kw["profile_days"]:
        days = dict(base.profile_days)
        for item in kw["profile_days"]:
            name, _, value = item.partition("=")
            if name not in PROFILES or not value.isdigit():
                raise BadInput(f"--profile-days {item!r}: expected PROFILE=DAYS with PROFILE "
                               f"one of {', '.join(PROFILES)}")
            days[name] = int(value)
        changes["profile_days"] = days
    if kw["crl_url"] or kw["ca_issuers_url"] or kw["ocsp_url"]:
        changes["urls"] = CaUrls(tuple(kw["crl_url"]) or base.urls.crl,
                                 tuple(kw["ca_issuers_url"]) or base.urls.ca_issuers,
                                 tuple(kw["ocsp_url"]) or base.urls.ocsp)
    return dataclasses.replace(base, **changes)


def _ca_info(ca) -> dict:
    return {
        "name": ca.name, "subject": ca.subject, "key": ca.key_type,
        "parent": ca.parent.name if ca.parent else None,
        "not_before": ca.not_before.isoformat(), "not_after": ca.not_after.isoformat(),
        "policy": ca.policy, "copy_extensions": ca.copy_extensions,
        "unique_subject": ca.unique_subject, "default_days": ca.default_days,
        "profile_days": ca.profile_days, "crl_hours": ca.crl_hours,
        "crl_include_expired": ca.crl_include_expired,
        "clock_skew_seconds": ca.clock_skew_seconds, "serial_mode": ca.serial_mode,
        "next_serial": ca.next_serial if ca.serial_mode == "sequential" else None,
        "crl_number": ca.crl_number, "crl_urls": ca.crl_urls,
        "ca_issuers_urls": ca.ca_issuers_urls, "ocsp_urls": ca.ocsp_urls,
        "approval": ca.approval,
    }


def _ca_text(info: dict) -> str:
    policy = info["policy"]
    fields = ", ".join(f"{f}={r}" for f, r in policy["fields"])
    lines = [
        f"CA {info['name']}", f"  subject:          {info['subject']}",
        f"  key:              {info['key']}",
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
    for key, label in (("crl_urls", "CRL DP"), ("ca_issuers_urls", "caIssuers"),
                       ("ocsp_urls", "OCSP")):
        for url in info[key]:
            lines.append(f"  {label + ':':<18}{url}")
    return "\n".join(lines)


@ca_group.command("create")
@click.argument("name")
@click.option("--subject", required=True, help="'/C=GB/O=Example/CN=Example Root CA' or RFC 4514.")
@click.option("--key-type", type=click.Choice(KEY_TYPES), default="rsa4096", show_default=True)
@click.option("--days", type=click.IntRange(1, authority.MAX_DAYS), default=3650,
              show_default=True,
              help="Validity of the CA certificate.")
@click.option("--parent", help="Make a subordinate CA signed by this pkiq CA.")
@passphrase_options("parent", "the parent CA key")
@passphrase_options()
@ca_option_decorators
@json_option
@click.pass_obj
def ca_create(app: App, name, subject, key_type, days, parent, parent_passphrase_file,
              parent_passphrase_env, passphrase_file, passphrase_env, as_json, **kw):
    """Create a root CA, or a subordinate CA with --parent."""
    options = _options(authority.CaOptions(), kw)
    passphrase = read_passphrase(app, passphrase_file, passphrase_env, what=f"CA {name}")
    subject_name = parse_name(subject)
    with app.transaction() as session:
        parent_ca = signer = None
        if parent:
            parent_ca = authority.get_ca(session, parent)
            signer = authority.load_signer(parent_ca, read_passphrase(
                app, parent_passphrase_file, parent_passphrase_env, what=f"CA {parent}"))
        ca, warnings = authority.create_ca(
            session, name=name, subject=subject_name, key_type=key_type, passphrase=passphrase,
            now=app.clock(), days=days, options=options, parent=parent_ca, parent_signer=signer)
        info = _ca_info(ca)
    _warn(warnings)
    _emit(info, as_json, lambda: f"created {_ca_text(info)}")


@ca_group.command("set")
@click.argument("name")
@ca_option_decorators
@json_option
@click.pass_obj
def ca_set(app: App, name, as_json, **kw):
    """Change a CA's settings (policy, copy_extensions, validity, URLs...)."""
    with app.transaction() as session:
        ca = authority.get_ca(session, name)
        authority.configure(session, ca, _options(authority.CaOptions.from_ca(ca), kw))
        info = _ca_info(ca)
    _emit(info, as_json, lambda: _ca_text(info))


@ca_group.command("list")
@json_option
@click.pass_obj
def ca_list(app: App, as_json):
    """List the CAs in the database."""
    with app.transaction() as session:
        rows = [_ca_info(ca) for ca in authority.list_cas(session)]
    _emit(rows, as_json, lambda: "\n".join(
        f"{r['name']:<20} {r['key']:<9} until {r['not_after'][:10]}  {r['subject']}"
        for r in rows) or "no CA yet: pkiq ca create NAME --subject ...")


@ca_group.command("show")
@click.argument("name")
@click.option("--pem", is_flag=True, help="Print the CA certificate in PEM.")
@json_option
@click.pass_obj
def ca_show(app: App, name, pem, as_json):
    """Show one CA's certificate and settings."""
    with app.transaction() as session:
        ca = authority.get_ca(session, name)
        if pem:
            click.echo(authority.ca_certificate(ca).public_bytes(
                serialization.Encoding.PEM).decode(), nl=False)
            return
        info = _ca_info(ca)
    _emit(info, as_json, lambda: _ca_text(info))


def _deliver(output: Output, obj, info: dict, as_json: bool, done: str) -> None:
    """Write the PEM/DER result where asked; with --json, the PEM rides in the JSON."""
    pem = obj.public_bytes(serialization.Encoding.PEM)
    data = obj.public_bytes(serialization.Encoding.DER) if output.der else pem
    if as_json:
        if output.path is not None:
            output.write(data)
        _emit({**info, "pem": pem.decode()}, True, "")
        return
    output.write(data)
    if output.path is not None:
        click.echo(f"{done} -> {output.path}", err=True)


@ca_group.command("sign")
@click.argument("name")
@click.argument("csr", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--profile", type=click.Choice(list(PROFILES)), default=DEFAULT_PROFILE,
              show_default=True)
@click.option("--days", type=click.IntRange(1, authority.MAX_DAYS),
              help="Validity (default: profile, then CA).")
@click.option("--md", help="Digest: sha256 (default; sha384 for P-384 CAs), sha384 or sha512. "
              "SHA-1 is refused.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the certificate here.")
@click.option("--der", is_flag=True, help="DER instead of PEM.")
@passphrase_options()
@json_option
@click.pass_obj
def ca_sign(app: App, name, csr, profile, days, md, out, der, passphrase_file, passphrase_env,
            as_json):
    """Sign a certificate request (PEM or DER) with CA NAME."""
    digest = authority.with_digest_check(md)
    output = Output(out, der)
    data = _read_input(csr)
    with app.transaction() as session:
        ca = authority.get_ca(session, name)
        signer = authority.load_signer(ca, read_passphrase(
            app, passphrase_file, passphrase_env, what=f"CA {name}"))
        result = authority.sign_csr(session, ca, signer, data, profile=profile, days=days,
                                    digest=digest, now=app.clock())
        info = _cert_info(result.record, ca.name)
    _warn(result.warnings)
    _deliver(output, result.certificate, {**info, "warnings": result.warnings}, as_json,
             f"issued serial {info['serial']} for {info['subject']}, valid until "
             f"{info['not_after']}")


def _cert_info(record, ca_name: str) -> dict:
    return {
        "ca": ca_name, "serial": record.serial,
        "status": {"V": "valid", "R": "revoked", "E": "expired"}[record.status],
        "subject": record.subject, "profile": record.profile,
        "not_before": record.not_before.isoformat() if record.not_before else None,
        "not_after": record.not_after.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "reason": record.revocation_reason,
        "invalidity_date": record.invalidity_date.isoformat() if record.invalidity_date else None,
    }


def _parse_time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{text!r} is not an ISO 8601 time (2026-11-27T10:00:00Z)") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@ca_group.command("revoke")
@click.argument("name")
@click.argument("serial")
@click.option("--reason", default="unspecified", show_default=True,
              help="RFC 5280 reason: keyCompromise, CACompromise, affiliationChanged, "
                   "superseded, cessationOfOperation, certificateHold, privilegeWithdrawn...")
@click.option("--invalidity-date", help="When the key is known or suspected to have been "
              "compromised (ISO 8601, UTC).")
@json_option
@click.pass_obj
def ca_revoke(app: App, name, serial, reason, invalidity_date, as_json):
    """Revoke a certificate (it appears on the next CRL: run gencrl)."""
    number = authority.parse_serial(serial)
    with app.transaction() as session:
        ca = authority.get_ca(session, name)
        record = authority.revoke(session, ca, number, now=app.clock(), reason=reason,
                                  invalidity_date=_parse_time(invalidity_date))
        info = _cert_info(record, ca.name)
    _emit(info, as_json, f"revoked {info['serial']} ({info['reason']}) {info['subject']}")


@ca_group.command("status")
@click.argument("name")
@click.argument("serial")
@json_option
@click.pass_obj
def ca_status(app: App, name, serial, as_json):
    """Status of a serial, as 'openssl ca -status': Valid, Revoked or Expired."""
    number = authority.parse_serial(serial)
    with app.transaction() as session:
        ca = authority.get_ca(session, name)
        record, state = authority.status(session, ca, number, app.clock())
        info = _cert_info(record, ca.name)
    info["status"] = state.lower()
    _emit(info, as_json, f"{info['serial']}={state} ({state[0]})")


@ca_group.command("updatedb")
@click.argument("name")
@json_option
@click.pass_obj
def ca_updatedb(app: App, name, as_json):
    """Mark valid certificates past their notAfter as expired (openssl ca -updatedb)."""
    with app.transaction() as session:
        count = authority.update_db(session, authority.get_ca(session, name), app.clock())
    _emit({"expired": count}, as_json, f"{count} certificate(s) marked expired")


@ca_group.command("release-hold")
@click.argument("name")
@click.argument("serial")
@json_option
@click.pass_obj
def ca_release_hold(app: App, name, serial, as_json):
    """Take a certificate off hold (certificateHold only): it leaves the next CRL."""
    number = authority.parse_serial(serial)
    with app.transaction() as session:
        ca = authority.get_ca(session, name)
        info = _cert_info(authority.release_hold(session, ca, number, app.clock()), ca.name)
    _emit(info, as_json, f"released {info['serial']}: {info['status']}; run gencrl to publish")


def _crl_info(ca_name: str, row) -> dict:
    return {"ca": ca_name, "crl_number": row.number, "entries": row.entries,
            "this_update": row.this_update.isoformat(),
            "next_update": row.next_update.isoformat()}


def _deliver_crl(output: Output, ca_name: str, row, as_json: bool) -> None:
    info = _crl_info(ca_name, row)
    _deliver(output, x509.load_der_x509_crl(row.der), info, as_json,
             f"CRL {row.number} with {row.entries} entries, next update {info['next_update']}")


@ca_group.command("gencrl")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--der", is_flag=True, help="DER instead of PEM.")
@passphrase_options()
@json_option
@click.pass_obj
def ca_gencrl(app: App, name, out, der, passphrase_file, passphrase_env, as_json):
    """Issue the CA's next CRL (the CRL number always increases)."""
    output = Output(out, der)
    with app.transaction() as session:
        ca = authority.get_ca(session, name)
        signer = authority.load_signer(ca, read_passphrase(
            app, passphrase_file, passphrase_env, what=f"CA {name}"))
        row = authority.generate_crl(session, ca, signer, app.clock())
    _deliver_crl(output, name, row, as_json)


@ca_group.command("crl")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--der", is_flag=True, help="DER instead of PEM.")
@json_option
@click.pass_obj
def ca_crl(app: App, name, out, der, as_json):
    """Print or save the CA's latest CRL (as issued by gencrl; nothing is signed)."""
    output = Output(out, der)
    with app.transaction() as session:
        row = authority.latest_crl(session, authority.get_ca(session, name))
    if row is None:
        raise NotFound(f"CA {name!r} has issued no CRL yet: run pkiq ca gencrl {name}")
    _deliver_crl(output, name, row, as_json)


@ca_group.command("import-openssl")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Name of the new pkiq CA.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The openssl config (default: openssl.cnf / openssl_local.cfg in FOLDER).")
@passphrase_options("import", "private/cakey.pem")
@passphrase_options()
@json_option
@click.pass_obj
def ca_import(app: App, folder, name, config, import_passphrase_file, import_passphrase_env,
              passphrase_file, passphrase_env, as_json):
    """Adopt an OpenSSL demoCA: cacert, key, index.txt, serial, crlnumber, newcerts, config."""
    demo = read_democa(folder, config)
    import_pass = None
    if import_passphrase_file or import_passphrase_env:
        import_pass = read_passphrase(app, import_passphrase_file, import_passphrase_env,
                                      what="private/cakey.pem", default_env=False)
    passphrase = read_passphrase(app, passphrase_file, passphrase_env, what=f"CA {name}")
    with app.transaction() as session:
        ca = adopt(session, demo, name=name, import_passphrase=import_pass or passphrase,
                   passphrase=passphrase, now=app.clock())
        info = _ca_info(ca)
    counts = {s: sum(1 for r in demo.rows if r.status == s) for s in "VRE"}
    info.update(imported=counts, notes=demo.notes)
    _warn(demo.notes)
    _emit(info, as_json, lambda: f"imported {counts['V']} valid, {counts['R']} revoked, "
          f"{counts['E']} expired entries\n{_ca_text(info)}")


@ca_group.command("export-openssl")
@click.argument("name")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@json_option
@click.pass_obj
def ca_export(app: App, name, folder, as_json):
    """Write a demoCA that 'openssl ca' 3.x keeps using (the key stays encrypted)."""
    with app.transaction() as session:
        ca = authority.get_ca(session, name)
        files, notes = render_democa(session, ca, folder, app.clock())
    write_tree(folder, files, private={"private/cakey.pem"})
    _warn(notes)
    _emit({"folder": str(folder), "files": sorted(files), "notes": notes}, as_json,
          f"wrote {folder}: openssl ca -config {folder / 'openssl.cnf'} -passin env:VAR ...")


# ====================================================================== cert

@cli.group("cert")
def cert_group():
    """Look up issued certificates."""


def _find(session, serial: str, ca_name: str | None):
    number = authority.parse_serial(serial)
    if ca_name:
        ca = authority.get_ca(session, ca_name)
        return authority.find_certificate(session, ca, number), ca
    found = authority.find_by_serial(session, number)
    if not found:
        raise NotFound(f"no certificate with serial {authority.serial_hex(number)}")
    if len(found) > 1:
        names = ", ".join(r.ca.name for r in found)
        raise BadInput(f"serial {found[0].serial} exists in several CAs ({names}): add --ca")
    return found[0], found[0].ca


@cert_group.command("show")
@click.argument("serial")
@click.option("--ca", "ca_name", help="The issuing CA (needed if the serial is ambiguous).")
@json_option
@click.pass_obj
def cert_show(app: App, serial, ca_name, as_json):
    """Show an issued certificate's index entry and contents."""

    with app.transaction() as session:
        record, ca = _find(session, serial, ca_name)
        info = _cert_info(record, ca.name)
        der = record.der
    if der is None:
        _emit(info, as_json, "\n".join(f"{k}: {v}" for k, v in info.items()))
        return
    decoded = Decoded("certificate", x509.load_der_x509_certificate(der))
    info["certificate"] = describe(decoded)
    _emit(info, as_json, lambda: f"status: {info['status']}"
          + (f" ({info['reason']}, {info['revoked_at']})" if info["revoked_at"] else "")
          + f"\nca: {ca.name}\nprofile: {info['profile']}\n{render(decoded)}")


@cert_group.command("get")
@click.argument("serial")
@click.option("--ca", "ca_name", help="The issuing CA (needed if the serial is ambiguous).")
@click.option("--chain", is_flag=True, help="Append the issuing CA chain (PEM only).")
@click.option("--der", is_flag=True, help="DER instead of PEM.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def cert_get(app: App, serial, ca_name, chain, der, out):
    """Print or save an issued certificate, optionally with its chain."""
    if chain and der:
        raise BadInput("--chain needs PEM: DER holds one certificate")
    output = Output(out, der)
    with app.transaction() as session:
        record, ca = _find(session, serial, ca_name)
        if record.der is None:
            raise NotFound(f"serial {record.serial} was imported from index.txt without its "
                           "certificate (not in newcerts/)")
        cert = x509.load_der_x509_certificate(record.der)
        extra = authority.chain(session, ca) if chain else []
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    output.write(b"".join(c.public_bytes(encoding) for c in [cert, *extra]))


# ====================================================================== x509

@cli.group("x509")
def x509_group():
    """Decode and convert certificates, requests and CRLs (no database needed)."""


@x509_group.command("decode")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def x509_decode(file, as_json):
    """Show a certificate, CSR or CRL (PEM or DER) like 'openssl x509 -text'."""
    items = decode_all(_read_input(file))
    _emit([describe(i) for i in items], as_json, lambda: "\n\n".join(render(i) for i in items))


@x509_group.command("convert")
@click.argument("infile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("outfile", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "target", type=click.Choice(["pem", "der"]),
              help="Output form (default: the other one).")
def x509_convert(infile, outfile, target):
    """DER to PEM and back, for certificates, CSRs and CRLs."""
    data = _read_input(infile)
    items = decode_all(data)
    source = "pem" if b"-----BEGIN " in data else "der"
    target = target or ("der" if source == "pem" else "pem")
    if target == "der":
        if len(items) != 1:
            raise BadInput(f"{infile} holds {len(items)} objects; DER holds exactly one")
        write_atomic(outfile, items[0].der())
    else:
        write_atomic(outfile, b"".join(i.pem() for i in items))
    click.echo(f"wrote {len(items)} {items[0].kind}(s) as {target.upper()} to {outfile}",
               err=True)


# ====================================================================== db

@cli.group("db")
def db_group():
    """The database schema (created and migrated on first use by every command)."""


@db_group.command("upgrade")
@json_option
@click.pass_obj
def db_upgrade(app: App, as_json):
    """Create the schema or bring it to the newest revision, then exit (a one-shot
    migration step for deployments; safe to run from several hosts at once)."""
    from .db import SCHEMA_HEAD

    app.sessions  # noqa: B018 - making the session factory migrates
    _emit({"revision": SCHEMA_HEAD}, as_json, f"database schema at revision {SCHEMA_HEAD}")


# Register the other command groups: submit, jobs, worker, beat, serve; trust and crl.
from . import cli_crl, cli_jobs  # noqa: E402,F401


def main() -> None:
    try:
        cli(prog_name="pkiq")
    except Exception as exc:  # a bug, not bad input: one line unless PKIQ_DEBUG asks for more
        if os.environ.get("PKIQ_DEBUG"):
            raise
        click.echo(f"pkiq: internal error: {type(exc).__name__}: {exc} "
                   "(set PKIQ_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)
