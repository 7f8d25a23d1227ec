"""What keeps a browser from turning the registry against its users.

* Response headers (``secure_send``): every response says ``nosniff``, may not be framed,
  sends referrers only to this origin, and carries a Content-Security-Policy: HTML pages may
  load nothing but their own inline style (by hash) and same-origin resources, run no script
  but the registry's own static file (``/static/site.js``: a copy button; no inline script,
  no ``eval``) and submit forms only here; anything else (the signed XML, JSON, text) is
  sandboxed, so markup hidden in an entry's foreign-namespace elements cannot run when a
  browser opens the raw XML. ``/docs`` (Swagger UI, from its CDN) gets its own narrower exception.
* Uploads (``check_upload``): a POST must be ``application/xml``, ``text/xml`` or the upload
  form (``multipart/form-data``), and a browser's cross-origin request is refused whatever
  its type. A web page elsewhere can make a visitor's browser send ``text/plain`` or a form
  to an intranet registry without asking anyone (no CORS preflight); the first rule stops
  the one, the Origin check the other. Programs send no ``Origin`` and are not affected.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request

from imagekit.errors import InputError

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

UPLOAD_TYPES = ("application/xml", "text/xml", "multipart/form-data")


class UnsupportedMediaType(InputError):
    """415: an upload in a type the registry does not take."""


class CrossOriginRefused(InputError):
    """403: a browser's request from another origin."""


def _style_hash(css: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"


def page_policy(inline_css: str) -> str:
    """The CSP of the HTML pages: no inline script, only same-origin script files (the copy
    button's ``/static/site.js``); the one inline style block by hash."""
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            f"style-src 'self' {_style_hash(inline_css)}",
            "img-src 'self' data:",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


#: Everything that is not a page: nothing loads, nothing runs, even if a browser renders it.
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; sandbox"
#: FastAPI's Swagger UI and ReDoc load their script and style from jsDelivr and start with an
#: inline script; they show only the OpenAPI document, never an entry.
DOCS_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src https://cdn.jsdelivr.net 'unsafe-inline'",
        "style-src https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'",
        "font-src https://fonts.gstatic.com",
        "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
        "worker-src blob:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    )
)
_DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # not no-referrer: with it, browsers send "Origin: null" on our own form posts
    (b"referrer-policy", b"same-origin"),
]


def secure_send(send: Send, path: str, page_csp: str) -> Send:
    """``send`` that adds the security headers to the response start."""
    page = page_csp.encode()
    docs = path in _DOCS_PATHS

    async def wrapped(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            names = {name.lower() for name, _ in headers}
            if b"content-security-policy" not in names:
                html = any(
                    name.lower() == b"content-type" and value.startswith(b"text/html")
                    for name, value in headers
                )
                csp = (DOCS_POLICY.encode() if docs else page) if html else DATA_POLICY.encode()
                headers.append((b"content-security-policy", csp))
            headers += [h for h in _COMMON if h[0] not in names]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _netloc(origin: str) -> str | None:
    scheme, sep, rest = origin.lower().partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        return None  # "null", or not an origin at all
    return rest


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_upload(request: Request) -> str:
    """Refuse an upload a browser could be made to send from another site; return its
    media type (one of UPLOAD_TYPES).

    Raises CrossOriginRefused (an ``Origin`` other than this server's, or ``Sec-Fetch-Site``
    saying cross-site) or UnsupportedMediaType.
    """
    origin = request.headers.get("origin")
    # Host against the Origin's host[:port], not the scheme: behind a TLS-terminating proxy
    # the server sees http while the browser's page is https; another site's host differs.
    host = request.headers.get("host", "").lower()
    if origin is not None and (not host or _netloc(origin) != host):
        raise CrossOriginRefused(f"refused: cross-origin upload (Origin {origin[:100]})")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise CrossOriginRefused(f"refused: cross-origin upload (Sec-Fetch-Site {site[:40]})")
    kind = media_type(request)
    if kind not in UPLOAD_TYPES:
        raise UnsupportedMediaType(
            f"unsupported media type {kind or 'none'!r}: upload application/xml "
            "(or the form, multipart/form-data)"
        )
    return kind
