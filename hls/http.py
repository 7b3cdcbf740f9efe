"""HTTP for CDNs and browsers on other origins (SPEC §3, §9): validators, ranges, gzip, CORS.

Every media response (playlist, init segment, segment) is built by
`media_response`, which gives it a strong ETag from the bytes sent, a
Last-Modified, and answers conditional and range requests; the `cors`
middleware puts the CORS headers on every response, errors included, and
answers preflights. The request parsing is aiohttp's (`if_none_match`,
`if_modified_since`, `http_range`); the rules are RFC 9110's.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from email.utils import formatdate

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

SEGMENT_CACHE = "public, max-age=31536000, immutable"
ERROR_CACHE = "public, max-age=2"  # no edge keeps a transient 404 or 503 for long
EXPOSED = "Content-Length, Content-Range, ETag, Age, Date"
ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
ALLOWED_HEADERS = "Range, If-None-Match, If-Modified-Since, If-Range, Content-Type"
PREFLIGHT_MAX_AGE = "86400"
GZIP_LEVEL = 6
CORS_ORIGIN = web.AppKey("cors_origin", str)


def strong_etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def http_date(seconds: float) -> str:
    return formatdate(int(seconds), usegmt=True)


def _accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get(hdrs.ACCEPT_ENCODING, "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not q or float(q) > 0
            except ValueError:
                return False
    return False


def _not_modified(request: web.Request, etag: str, modified: float | None) -> bool:
    """RFC 9110 §13.2.2: If-None-Match (weak comparison) first; If-Modified-Since
    only without it, and only for a resource whose Last-Modified is meaningful."""
    tags = request.if_none_match
    if tags is not None:
        return any(t.value == "*" or f'"{t.value}"' == etag for t in tags)
    since = request.if_modified_since
    return since is not None and modified is not None and int(modified) <= since.timestamp()


def _range(request: web.Request, size: int, etag: str) -> tuple[int, int] | None | str:
    """(start, stop) of a satisfiable single range, "unsatisfiable", or None for the whole body.

    An invalid, multi-range or stale If-Range request gets the whole body
    (RFC 9110 §14.2 lets a server ignore Range)."""
    if hdrs.RANGE not in request.headers:
        return None
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None and if_range.strip() != etag:
        return None  # a date or another validator: the representation may have changed
    if request.headers[hdrs.RANGE].replace(" ", "").lower() in ("bytes=-0", "bytes=-00"):
        return "unsatisfiable"
    try:
        wanted = request.http_range
    except ValueError:
        return None
    start, stop = wanted.start or 0, wanted.stop
    if start < 0:  # a suffix: the last -start bytes
        start = max(size + start, 0)
    if start >= size:
        return "unsatisfiable"
    return start, size if stop is None else min(stop, size)


def media_response(
    request: web.Request,
    body: bytes,
    content_type: str,
    cache_control: str,
    modified: float | None,
    compressible: bool = False,
) -> web.Response:
    """A GET/HEAD answer for one representation of a media resource.

    `modified` is the source's modification time (the content is derived
    from it deterministically) or None for a live playlist, whose
    Last-Modified is the time of the answer and which never answers
    If-Modified-Since (it may change twice within a second). Compressible
    bodies (playlists) are gzipped when accepted, unless a range is asked
    for; gzip's header carries no time, so the same URL gives the same bytes.
    """
    headers: dict[str, str] = {
        hdrs.CONTENT_TYPE: content_type,
        hdrs.CACHE_CONTROL: cache_control,
        hdrs.LAST_MODIFIED: http_date(time.time() if modified is None else modified),
        hdrs.ACCEPT_RANGES: "bytes",
    }
    if compressible:
        headers[hdrs.VARY] = "Accept-Encoding"
        if hdrs.RANGE not in request.headers and _accepts_gzip(request):
            body = gzip.compress(body, GZIP_LEVEL, mtime=0)
            headers[hdrs.CONTENT_ENCODING] = "gzip"
    etag = headers["ETag"] = strong_etag(body)  # the usual spelling (aiohttp has "Etag")
    if _not_modified(request, etag, modified):
        return web.Response(status=304, headers=headers)
    span = _range(request, len(body), etag)
    if span == "unsatisfiable":
        headers[hdrs.CONTENT_RANGE] = f"bytes */{len(body)}"
        headers[hdrs.CACHE_CONTROL] = ERROR_CACHE
        return web.Response(status=416, headers=headers)
    if isinstance(span, tuple):
        start, stop = span
        headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{stop - 1}/{len(body)}"
        return web.Response(status=206, body=body[start:stop], headers=headers)
    return web.Response(body=body, headers=headers)


def _cors_headers(request: web.Request, headers: dict[str, str] | None = None) -> dict[str, str]:
    allowed = request.app[CORS_ORIGIN]
    out = {
        "Access-Control-Allow-Origin": allowed,
        "Access-Control-Expose-Headers": EXPOSED,
    }
    if allowed != "*":
        out[hdrs.VARY] = "Origin"
    out.update(headers or {})
    return out


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS on every answer; an OPTIONS request anywhere is a preflight."""
    if request.method == hdrs.METH_OPTIONS:
        asked = request.headers.get("Access-Control-Request-Headers")
        return web.Response(
            status=204,
            headers=_cors_headers(
                request,
                {
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": asked or ALLOWED_HEADERS,
                    "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                    hdrs.CACHE_CONTROL: f"public, max-age={PREFLIGHT_MAX_AGE}",
                },
            ),
        )
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects: the other errors are JSON answers by now
        for name, value in _cors_headers(request).items():
            exc.headers.setdefault(name, value)
        raise
    for name, value in _cors_headers(request).items():
        if name == hdrs.VARY and hdrs.VARY in response.headers:
            response.headers[hdrs.VARY] = f"{response.headers[hdrs.VARY]}, {value}"
        else:
            response.headers.setdefault(name, value)
    return response
