"""``POST /api/v1/verify``: Expressway's "client certificate testing" through the API. A
certificate (PEM, with its chain if the peer sends one) and a node; the answer is the
verdict and one entry per certificate of the path, from ``service.verify.verify_node``, the
function ``pkiq verify --node`` calls.

Readable by every role, ``requester`` included: the caller learns whether a certificate it
holds would be accepted, from trusted CA certificates and CRLs that are public anyway, and
changes nothing. What a requester may not do is make pkiq fetch URLs: distribution points
and OCSP responders are named by the uploaded certificate, so anyone could point them at
an internal address. For a requester they default to off and asking for them is a 403;
approvers and admins get Expressway's defaults (on).

The parsed CRLs are kept on the app (one ``CrlCache``), so a node's large CRL is indexed
once, not per request.
"""

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ca.errors import BadInput
from ca.tokens import Forbidden
from ca.verify import RevocationSettings
from service import verify as verify_service

PEM_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+$"


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^\x00-\x1f\x7f]+$",
                               description="The node whose trusted list and CRLs decide.")]
    certificate: str = Field(min_length=1, max_length=256 * 1024, pattern=PEM_TEXT,
                             description="The certificate to check, PEM; certificates after "
                                         "the first serve as intermediates.")
    intermediates: str | None = Field(default=None, max_length=256 * 1024, pattern=PEM_TEXT,
                                      description="More intermediates, PEM.")
    purpose: Literal["serverAuth", "clientAuth"] | None = None
    host: Annotated[str, Field(max_length=253, pattern=r"^[^\x00-\x1f\x7f]+$")] | None = \
        Field(default=None, description="The peer address (TLS verify mode: CN or SAN).")
    at: dt.datetime | None = Field(default=None, description="Check as at this time.")
    use_ocsp: bool | None = Field(default=None, description="Default: on, off for requesters.")
    use_crls: bool = True
    cdp_downloads: bool | None = Field(default=None,
                                       description="Default: on, off for requesters.")
    fallback: Literal["not-revoked", "revoked"] = "not-revoked"


def verify_router() -> APIRouter:
    """Made when the API is: the bearer dependency lives in ``web.api``, which includes it.
    (No ``from __future__ import annotations`` here: FastAPI reads the endpoint's
    annotations, and ``Authorized`` is a name of this function, not of the module.)"""
    from .api import Authorized

    router = APIRouter(tags=["verify"])

    @router.post("/verify", operation_id="verifyCertificate")
    def verify(body: VerifyRequest, grant: Authorized, request: Request) -> dict:
        """Would this node accept this certificate? 200 with ``result`` valid, invalid or
        undetermined (the fallback treating no answer as revoked), and the path."""
        network = grant.at_least("approver")
        if not network and (body.use_ocsp or body.cdp_downloads):
            raise Forbidden("CDP downloads and OCSP fetch URLs the certificate names: they "
                            "need an approver or admin token")
        at = body.at
        if at is not None and at.tzinfo is None:
            raise BadInput("at: give a time zone (2026-11-27T10:00:00Z)")
        settings = RevocationSettings(
            use_ocsp=network if body.use_ocsp is None else body.use_ocsp,
            use_crls=body.use_crls,
            cdp_downloads=network if body.cdp_downloads is None else body.cdp_downloads,
            fallback=body.fallback)
        extra = (body.intermediates.encode(),) if body.intermediates else ()
        check = verify_service.Check(body.certificate.encode(), extra, at, body.purpose,
                                     body.host, settings)
        app = request.app
        cache = getattr(app.state, "verify_cache", None)
        if cache is None:
            cache = app.state.verify_cache = verify_service.CrlCache()
        return verify_service.verify_node(app.state.pkiq_ctx, body.node, check,
                                          cache).view()

    return router
