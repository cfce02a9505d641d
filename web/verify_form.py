"""The dashboard's "Check a certificate" form: read it (URL-encoded, or multipart/form-data
when a file is uploaded) and turn it into the ``service.verify.Check`` the API would make.

Multipart is parsed with the standard library's ``email`` parser, bounded before parsing,
so the dashboard needs no extra dependency for one file field. The rules for the fields are
the API's (``web.api_verify``): a certificate up to 256 KiB, a node and a host name without
control characters, and no network fetches (OCSP, CDP downloads) for a requester.
"""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ca.errors import BadInput
from ca.tokens import Forbidden
from ca.verify import RevocationSettings
from service.verify import Check

MAX_CERT = 256 * 1024
MAX_VERIFY_FORM = 2 * MAX_CERT + 16 * 1024
MAX_BODY = 1024 * 1024  # web.app's BodyLimit on /ui: past it a JSON 413, before it this page's
FIELDS = ("csrf", "node", "certificate", "file", "purpose", "host", "use_ocsp", "use_crls",
          "cdp_downloads", "fallback")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # PEM may hold tabs and newlines
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,253}$")


class TooLarge(BadInput):
    http_status = 413


async def _body(request: Request) -> bytes:
    """Read whole (web.app's BodyLimit stops it at MAX_BODY) before saying it is too large:
    a server that answers mid-upload leaves the browser with a reset, not the message."""
    body = b""
    async for chunk in request.stream():
        body += chunk
    if len(body) > MAX_VERIFY_FORM:
        raise TooLarge(f"the form is over {MAX_VERIFY_FORM // 1024} KiB: a certificate and "
                       "its chain are far smaller")
    return body


def _multipart(kind: str, body: bytes) -> tuple[dict[str, str], bytes | None]:
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + kind.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise BadInput("the form could not be read")
    form: dict[str, str] = {}
    upload = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name not in FIELDS or name in form or (name == "file" and upload is not None):
            raise BadInput(f"the form holds an unexpected field {str(name)[:40]!r}")
        data = part.get_payload(decode=True) or b""
        if name == "file":
            upload = data or None  # a file input left empty is sent as an empty part
            continue
        try:
            form[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{name}: not UTF-8 text") from None
    return form, upload


async def verify_form(request: Request) -> tuple[dict[str, str], bytes | None]:
    """The fields as text and the uploaded file's bytes (None without one); 413 past the
    bound, 415 for another encoding, 400 for a form that cannot be read."""
    kind = request.headers.get("content-type", "")
    media = kind.split(";")[0].strip().lower()
    if media not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise HTTPException(415, "this form is sent as multipart/form-data or "
                                 "application/x-www-form-urlencoded")
    body = await _body(request)
    if media == "multipart/form-data":
        form, upload = _multipart(kind, body)
    else:
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise BadInput("the form could not be read") from None
        if set(fields) - set(FIELDS) - {"file"}:
            raise BadInput("the form holds an unexpected field")
        form, upload = {k: v[0] for k, v in fields.items() if k != "file"}, None
    if any(_CONTROL.search(v) for v in form.values()):
        raise BadInput("the form holds control characters")
    return form, upload


def verify_options(form: dict[str, str], upload: bytes | None, network: bool
                   ) -> tuple[str, Check]:
    """The node and the check, by the API's rules; ``network``: may the certificate's URLs
    be fetched (approver and admin)? HTML checkboxes are sent only when ticked."""
    node = form.get("node", "").strip()
    if not _NAME.match(node):
        raise BadInput("choose a node")
    pasted = form.get("certificate", "").strip()
    if pasted and upload:
        raise BadInput("paste a certificate or upload a file, not both")
    cert = upload or pasted.encode()
    if not cert:
        raise BadInput("paste a certificate (PEM) or upload a file (PEM or DER)")
    if len(cert) > MAX_CERT:
        raise BadInput(f"the certificate is over {MAX_CERT // 1024} KiB")
    purpose = form.get("purpose") or None
    if purpose not in (None, "serverAuth", "clientAuth"):
        raise BadInput("purpose: serverAuth, clientAuth or none")
    host = form.get("host", "").strip() or None
    if host is not None and not _NAME.match(host):
        raise BadInput("host: up to 253 characters, no control characters")
    use_ocsp, cdp = form.get("use_ocsp") == "on", form.get("cdp_downloads") == "on"
    if not network and (use_ocsp or cdp):
        raise Forbidden("CDP downloads and OCSP fetch URLs the certificate names: they need "
                        "an approver or admin token")
    fallback = form.get("fallback") or "not-revoked"
    if fallback not in ("not-revoked", "revoked"):
        raise BadInput("fallback: not-revoked or revoked")
    settings = RevocationSettings(use_ocsp=use_ocsp, use_crls=form.get("use_crls") == "on",
                                  cdp_downloads=cdp, fallback=fallback)
    return node, Check(cert, (), None, purpose, host, settings)
