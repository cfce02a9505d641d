"""The trusted CA list (the guide's "Managing the trusted CA list"): the anchors CRLs are
checked against, and later what each Expressway node is given."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from ca import trust

from .context import ServiceContext


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def entry_view(row) -> dict:
    return {"id": row.id, "sha256": row.sha256, "subject": row.subject, "issuer": row.issuer,
            "not_after": _iso(row.not_after), "origin": row.origin}


def add(ctx: ServiceContext, bundle: bytes) -> dict:
    """Append the CA certificates of a PEM bundle; duplicates (by fingerprint) are ignored."""
    with ctx.transaction() as session:
        result = trust.add(session, bundle, ctx.clock())
        view = {"added": [entry_view(r) for r in result.added],
                "duplicates": result.duplicates, "warnings": result.warnings}
        ctx.audit_many(session, [("trust.add", f"trust:{e['sha256']}", {"subject": e["subject"]})
                                 for e in view["added"]])
        return view


def list_entries(ctx: ServiceContext) -> dict:
    with ctx.transaction() as session:
        return {"entries": [entry_view(r) for r in trust.list_entries(session)],
                "warnings": trust.list_warnings(session, ctx.clock())}


def certificates(ctx: ServiceContext, ref: str | None = None
                 ) -> list[tuple[dict, x509.Certificate]]:
    """One entry (by id or fingerprint prefix) or all, with the certificates themselves."""
    with ctx.transaction() as session:
        rows = [trust.find(session, ref)] if ref else trust.list_entries(session)
        found = [(entry_view(r), r.der) for r in rows]
    return [(info, x509.load_der_x509_certificate(der)) for info, der in found]


def remove(ctx: ServiceContext, refs: list[str]) -> dict:
    """By id or fingerprint prefix: all found, or none removed."""
    with ctx.transaction() as session:
        rows, warnings = trust.remove(session, refs, ctx.clock())
        view = {"removed": [entry_view(r) for r in rows], "warnings": warnings}
        ctx.audit_many(session, [("trust.remove", f"trust:{e['sha256']}",
                                  {"subject": e["subject"]}) for e in view["removed"]])
        return view


def reset(ctx: ServiceContext) -> dict:
    """Back to the default: pkiq's own CAs only."""
    with ctx.transaction() as session:
        view = {"entries": [entry_view(r) for r in trust.reset(session, ctx.clock())]}
        ctx.audit(session, "trust.reset", "trust", {"entries": len(view["entries"])})
        return view
