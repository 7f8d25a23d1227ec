"""Server-rendered HTML: catalogue, entry, endorser pages and the upload form (the routes that
serve them are in ``pages`` and ``api``; nothing here is a route).

Plain forms and links that work without JavaScript; Jinja2 with autoescaping on, so titles
and descriptions written by strangers are shown as text. The one script (``static/site.js``,
a copy button) is a static file, never inline, so the pages' Content-Security-Policy
(``script-src 'self'``) lets it run and nothing else; the style is inline, allowed by hash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

from . import __version__
from ._humanize import human_size, relative_time
from ._state import state_of
from .render import entry_dict, signature_facts
from .storage import STATUSES, Endorser, Query, Storage, StoredEntry, url_segment

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
#: The pages' one inline style block (the Content-Security-Policy allows it by hash).
INLINE_CSS = (Path(__file__).parent / "static" / "style.css").read_text()
MENU_ENDORSERS = 200  # the catalogue's endorser menu lists at most this many
HISTORY_ROWS = 100  # an entry page shows this much of the image's history (the rest: /browse)
STATIC_DIR = Path(__file__).parent / "static"  # style.css, site.js (served at /static)


def entry_href(entry: StoredEntry) -> str:
    return entry.path


def is_web_link(url: str) -> bool:
    """True for the only URLs pages make links of: http and https (never ``javascript:``,
    ``data:``, ``file:``...; entries stored before locations were checked may hold them)."""
    return url.startswith(("http://", "https://"))


def catalogue_href(identifier: str) -> str:
    """The catalogue filtered to one image ID (replaces / isReplacedBy point at IDs)."""
    return "/browse?" + urlencode({"identifier": identifier, "history": "true"})


_ENV.globals.update(
    entry_href=entry_href,
    seg=url_segment,
    is_web_link=is_web_link,
    catalogue_href=catalogue_href,
    human_size=human_size,
    relative_time=relative_time,
)


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    html = _ENV.get_template(template).render(
        request=request, version=__version__, css=INLINE_CSS, now=datetime.now(UTC), **context
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)


def _qs(query: Query, **changes: Any) -> str:
    values = {
        "email": query.email,
        "os": query.os,
        "os-version": query.os_version,
        "arch": query.arch,
        "kind": query.kind,
        "status": query.status,
        "q": query.q,
        "tag": query.tag,
        "identifier": query.identifier,
        "location": query.location,
        "created": query.created,
        "history": "true" if query.history else None,
        "limit": query.limit if query.limit != 100 else None,
        "offset": query.offset or None,
    }
    values.update(changes)
    return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def catalogue_page(request: Request, query: Query) -> Response:
    storage = state_of(request).storage
    now = datetime.now(UTC)
    page = storage.find(query, now=now)
    prev_qs = _qs(query, offset=max(query.offset - query.limit, 0)) if query.offset else None
    next_qs = _qs(query, offset=query.offset + query.limit) if page.more else None
    return render(
        request,
        "catalogue.html",
        {
            "entries": page.entries,
            "total": page.total,
            "first": query.offset + 1,
            "last": query.offset + len(page.entries),
            "query": query,
            "statuses": STATUSES,
            "prev_qs": prev_qs,
            "next_qs": next_qs,
            "endorsers": _endorser_choices(storage, query),
        },
    )


def _endorser_choices(storage: Storage, query: Query) -> list[Endorser]:
    """The first endorsers for the filter's menu (never all of them), plus the chosen one."""
    endorsers, _ = storage.endorsers(limit=MENU_ENDORSERS)
    if query.email and all(e.email != query.email for e in endorsers):
        endorsers.append(Endorser(query.email, 0, ""))
    return endorsers


def launch_command(request: Request, entry: StoredEntry) -> str:
    """The command that launches this entry from this marketplace (by ID: the tag may
    move on to a newer image, the ID names these bytes)."""
    base = str(request.base_url).rstrip("/")
    kind = "launch" if entry.kind != "disk" else "launch IMAGE --readonly-disk"
    return f"imagekit {kind} {entry.identifier} --marketplace {base}"


def entry_page(request: Request, entry: StoredEntry) -> Response:
    now = datetime.now(UTC)
    history = state_of(request).storage.find(
        Query(identifier=entry.identifier, history=True, limit=HISTORY_ROWS), now=now
    )
    terms = entry_dict(entry, now)["entry"]
    return render(
        request,
        "entry.html",
        {
            "entry": entry,
            "status": entry.status(now),
            "history": history.entries,
            "more_history": history.more,
            "terms": terms,
            "xml_text": (entry.xml or b"").decode("utf-8", "replace"),
            "launch": launch_command(request, entry),
            "signature": signature_facts(entry.xml or b""),
        },
    )


def endorsers_page(
    request: Request, endorsers: list[Endorser], *, limit: int, offset: int, more: bool
) -> Response:
    def qs(at: int) -> str:
        return urlencode(
            {"media": "html", "offset": at, **({"limit": limit} if limit != 100 else {})}
        )

    return render(
        request,
        "endorsers.html",
        {
            "endorsers": endorsers,
            "prev_qs": qs(max(offset - limit, 0)) if offset else None,
            "next_qs": qs(offset + limit) if more else None,
        },
    )


def endorser_page(request: Request, endorser: Endorser, query: Query) -> Response:
    page = state_of(request).storage.find(
        Query(email=endorser.email, history=True, limit=query.limit, offset=query.offset),
        now=datetime.now(UTC),
    )
    return render(request, "endorser.html", {"endorser": endorser, "entries": page.entries})
