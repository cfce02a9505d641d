"""Conditional GET (RFC 9110 section 13) for any ``Download``: 200 with the body, or 304
with its validators only, and HEAD as GET without the body.

Pollers (an Expressway's automatic CRL updates, curl -z, any HTTP cache) come back with the
ETag or Last-Modified they were given; answering 304 then costs no body, and deciding it
costs one string comparison.

What is not done here: If-Match and If-Unmodified-Since (for writes; these files are only
read) and Range (the files are small enough to send whole; a Range header is ignored, which
RFC 9110 section 14.2 allows)."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime, parsedate_to_datetime

from starlette.requests import Request
from starlette.responses import Response

from service.downloads import Download

MAX_TAGS_FIELD = 8192  # about a hundred of our tags


def entity_tags(field: str) -> list[str]:
    """The opaque tags of an If-None-Match value, each with its quotes and without any
    ``W/`` (weak comparison ignores it, RFC 9110 section 8.8.3.2), or ``["*"]``. An entry
    that is not a quoted tag is skipped: it can match nothing. A tag may hold commas
    (``etagc`` in section 8.8.3), so the list is read tag by tag, not split on commas."""
    tags, at, size = [], 0, len(field)
    while at < size:
        while at < size and field[at] in " \t,":
            at += 1
        if field.startswith("*", at):
            tags.append("*")
            at += 1
            continue
        if field.startswith("W/", at):
            at += 2
        if field.startswith('"', at):
            end = field.find('"', at + 1)
            if end < 0:
                break
            tags.append(field[at:end + 1])
            at = end + 1
        else:  # not a tag: skip to the next comma
            comma = field.find(",", at)
            at = size if comma < 0 else comma + 1
    return tags


def none_match(field: str, etag: str) -> bool:
    """True when If-None-Match ``field`` names ``etag`` (weakly) or is ``*``: the client's
    copy is current (RFC 9110 section 13.1.2). Only the first MAX_TAGS_FIELD characters are
    read: a client has a copy or two, and a megabyte of tags must not cost a megabyte's
    parsing per request."""
    return any(tag == "*" or tag == etag for tag in entity_tags(field[:MAX_TAGS_FIELD]))


def http_date(when: dt.datetime) -> str:
    """IMF-fixdate (RFC 9110 section 5.6.7), whole seconds."""
    return format_datetime(when.astimezone(dt.UTC).replace(microsecond=0), usegmt=True)


def parse_http_date(field: str) -> dt.datetime | None:
    """Any of the three HTTP-date forms RFC 9110 section 5.6.7 says a recipient accepts, as
    an aware UTC time; None when the field is not a date (then it is ignored)."""
    try:
        when = parsedate_to_datetime(field)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def not_modified(headers, download: Download) -> bool:
    """RFC 9110 section 13.2.2, steps 3 and 4 for GET and HEAD: If-None-Match decides when
    it is present; only without it does If-Modified-Since count (a copy as new as
    Last-Modified is current; HTTP dates have whole seconds, so a second CRL issued within
    the same second is told apart by its ETag only)."""
    tags = headers.get("if-none-match")
    if tags is not None:
        return none_match(tags, download.etag)
    since = headers.get("if-modified-since")
    when = parse_http_date(since) if since is not None else None
    return when is not None and download.last_modified.replace(microsecond=0) <= when


def respond(request: Request, download: Download, cache_control: str) -> Response:
    """The answer to a GET or HEAD of ``download``. A 304 carries the ETag and
    Cache-Control a 200 would (RFC 9110 section 15.4.5) and no body; a HEAD gets a 200's
    headers, Content-Length included, and no body."""
    validators = {"etag": download.etag, "cache-control": cache_control}
    if not_modified(request.headers, download):
        return Response(status_code=304, headers=validators)
    headers = {**validators, "last-modified": http_date(download.last_modified),
               "content-disposition": f'inline; filename="{download.filename}"',
               "x-content-type-options": "nosniff"}
    if request.method == "HEAD":
        headers["content-length"] = str(len(download.body))
        return Response(b"", headers=headers, media_type=download.media_type)
    return Response(download.body, headers=headers, media_type=download.media_type)
