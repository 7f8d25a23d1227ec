"""Routes for programs: the StratusLab-compatible ones and the JSON API under ``/api/``.

StratusLab routes answer with the signed XML by default (JSON or HTML by ``Accept`` or
``?media=``); lists of XML are the entries' bytes, without their XML declarations, inside
one ``<metadata>`` element. ``X-Total-Count`` carries the size of the unpaged result.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Query as Q
from pydantic import BaseModel, Field, TypeAdapter
from starlette.responses import Response, StreamingResponse

from imagekit.market.summary import EntrySummary

from . import html
from ._state import state_of
from .media import wants
from .params import Filters, classify, ingest
from .render import entry_json
from .storage import Endorser, Page, Query, Storage, StoredEntry

_SUMMARY = TypeAdapter(EntrySummary)

router = APIRouter(prefix="/api", tags=["JSON API"])
compat_router = APIRouter(tags=["StratusLab-compatible (XML by default)"])

_XML_DECL = re.compile(rb"^\s*(\xef\xbb\xbf)?\s*<\?xml[^>]*\?>\s*")


# --- models (the OpenAPI document describes these) ------------------------------------


class EntryList(BaseModel):
    total: int | None = Field(
        description="all matches; null when more pages follow and count=true was not given"
    )
    more: bool = Field(description="another page follows")
    offset: int
    limit: int
    entries: list[EntrySummary]


class EndorserInfo(BaseModel):
    email: str
    entries: int
    latest_created: str
    fingerprint: str | None = Field(
        description="SHA-256 of the certificate this e-mail is bound to (lower-case hex)"
    )
    bound_via: str | None = Field(description="first-use, trusted (a CA vouched) or admin")
    bound: str | None = Field(description="when the binding was made")


class EndorserDetail(EndorserInfo):
    history: list[EntrySummary]


# --- shared helpers -----------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def info(entry: StoredEntry) -> dict[str, Any]:
    return entry.to_dict(now())


def xml_list(storage: Storage, entries: list[StoredEntry]) -> Iterator[bytes]:
    """The list's XML, streamed: entries' bytes are read a few at a time (a page holds up
    to 1000 entries of up to a MiB each)."""
    yield b"<?xml version='1.0' encoding='UTF-8'?>\n<metadata>\n"
    for xml in storage.iter_xml(entries):
        yield _XML_DECL.sub(b"", xml, count=1).rstrip() + b"\n"
    yield b"</metadata>\n"


def entry_response(request: Request, entry: StoredEntry, *, status_code: int = 200) -> Response:
    """One entry in the negotiated representation; the XML is the stored bytes."""
    media = wants(request)
    headers = {"Vary": "Accept", "Content-Location": entry.path}
    if media == "html":
        return html.entry_page(request, entry)
    if media == "json":
        return Response(entry_json(entry, now()), media_type="application/json", headers=headers)
    assert entry.xml is not None
    headers["ETag"] = f'"{entry.etag}"'
    headers["Cache-Control"] = "public, max-age=31536000, immutable"
    if request.query_params.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="{entry.identifier}.xml"'
    return Response(
        entry.xml, status_code=status_code, media_type="application/xml", headers=headers
    )


def list_response(request: Request, query: Query) -> Response:
    media = wants(request)
    if media == "html":
        return html.catalogue_page(request, query)
    storage = state_of(request).storage
    page = storage.find(query, now=now())
    headers = {"Vary": "Accept", "X-More": "true" if page.more else "false"}
    if page.total is not None:
        headers["X-Total-Count"] = str(page.total)
    if media == "json":
        return Response(
            entry_list(page, query).model_dump_json(),
            media_type="application/json",
            headers=headers,
        )
    return StreamingResponse(
        xml_list(storage, page.entries), media_type="application/xml", headers=headers
    )


def entry_list(page: Page, query: Query) -> EntryList:
    return EntryList(
        total=page.total,
        more=page.more,
        offset=query.offset,
        limit=query.limit,
        entries=[EntrySummary(**info(e)) for e in page.entries],
    )


# --- StratusLab-compatible routes ---------------------------------------------------------

_XML_BODY = {"type": "string", "description": "a signed metadata entry (RDF/XML)"}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/xml": {"schema": _XML_BODY},
            "text/xml": {"schema": _XML_BODY},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"metadata": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


@compat_router.post(
    "/metadata", status_code=201, summary="Upload a signed entry", openapi_extra=_UPLOAD_BODY
)
async def post_metadata(request: Request) -> Response:
    """Raw XML body (``application/xml`` or ``text/xml``) or a multipart form; 201 with
    ``Location`` of the stored entry. 415 for other types, 403 for a browser's cross-origin
    request or an endorser e-mail bound to another certificate."""
    entry = await ingest(request)
    media = wants(request, default="text")
    if media == "json":
        return Response(
            _SUMMARY.dump_json(EntrySummary(**info(entry))),
            status_code=201,
            media_type="application/json",
            headers={"Location": entry.path},
        )
    return Response(
        entry.path + "\n",
        status_code=201,
        media_type="text/plain",
        headers={"Location": entry.path},
    )


@compat_router.get("/metadata", summary="List entries")
def list_all(request: Request, query: Filters) -> Response:
    return list_response(request, query)


@compat_router.get("/metadata/{a}", summary="List entries of an ID, endorser or date")
def list_one(request: Request, a: str, query: Filters) -> Response:
    return list_response(request, classify(query, [a]))


@compat_router.get("/metadata/{a}/{b}", summary="List entries of two of ID, endorser, date")
def list_two(request: Request, a: str, b: str, query: Filters) -> Response:
    return list_response(request, classify(query, [a, b]))


@compat_router.get("/metadata/{identifier}/{email}/{created}", summary="One signed entry")
def get_entry(request: Request, identifier: str, email: str, created: str) -> Response:
    """The original signed bytes (XML), or JSON/HTML by ``Accept``/``?media=``.
    ``identifier`` may be a unique prefix."""
    entry = state_of(request).storage.get(identifier, email, created)
    return entry_response(request, entry)


@compat_router.get("/tag/{email}/{tag}", summary="The endorser's newest entry with a tag")
def get_tag(request: Request, email: str, tag: str) -> Response:
    """Newest current, non-deprecated entry whose ``dcterms:alternative`` is ``tag``."""
    return entry_response(request, state_of(request).storage.by_tag(email, tag))


EndorserLimit = Annotated[int, Q(ge=1, le=1000)]
EndorserOffset = Annotated[int, Q(ge=0, le=10_000_000)]


@compat_router.get("/endorsers", summary="Endorsers")
def get_endorsers(
    request: Request, limit: EndorserLimit = 100, offset: EndorserOffset = 0
) -> Response:
    """One page of endorsers by e-mail; ``X-More: true`` when another page follows."""
    endorsers, more = state_of(request).storage.endorsers(limit=limit, offset=offset)
    if wants(request, default="json") == "html":
        return html.endorsers_page(request, endorsers, limit=limit, offset=offset, more=more)
    return Response(
        "[" + ",".join(EndorserInfo(**e.__dict__).model_dump_json() for e in endorsers) + "]",
        media_type="application/json",
        headers={"X-More": "true" if more else "false"},
    )


@compat_router.get("/endorsers/{email}", summary="One endorser and their entries")
def get_endorser(request: Request, email: str, query: Filters) -> Response:
    storage = state_of(request).storage
    endorser = storage.endorser(email)
    if wants(request, default="json") == "html":
        return html.endorser_page(request, endorser, query)
    entries = storage.find(
        Query(email=email, history=True, limit=query.limit, offset=query.offset), now=now()
    ).entries
    return Response(
        _endorser_detail(endorser, entries).model_dump_json(), media_type="application/json"
    )


def _endorser_detail(endorser: Endorser, entries: list[StoredEntry]) -> EndorserDetail:
    return EndorserDetail(**endorser.__dict__, history=[EntrySummary(**info(e)) for e in entries])


# --- JSON API -------------------------------------------------------------------------------


@router.get("/entries", response_model=EntryList, summary="Search entries")
def api_entries(request: Request, query: Filters) -> Response:
    """Current entries (each (ID, endorser)'s newest endorsement; ``history=true`` for all),
    newest first. ``q``: words, each matching the start of a word of the title,
    description, tag, OS, e-mail or ID."""
    page = state_of(request).storage.find(query, now=now())
    # a Response skips FastAPI's second validation of the model (the model documents it)
    return Response(entry_list(page, query).model_dump_json(), media_type="application/json")


@router.post(
    "/entries",
    response_model=EntrySummary,
    status_code=201,
    summary="Upload",
    openapi_extra=_UPLOAD_BODY,
)
async def api_upload(request: Request) -> Response:
    """Upload a signed entry (raw XML body); 201 with the stored entry's summary."""
    entry = await ingest(request)
    return Response(
        _SUMMARY.dump_json(EntrySummary(**info(entry))),
        status_code=201,
        media_type="application/json",
        headers={"Location": entry.path},
    )


@router.get("/entries/{identifier}", response_model=list[EntrySummary], summary="Entries of an ID")
def api_entries_of(request: Request, identifier: str, history: bool = False) -> list[EntrySummary]:
    """Every endorser's current entry for the ID (or a unique prefix); all with history."""
    entries = (
        state_of(request)
        .storage.find(Query(identifier=identifier, history=history, limit=1000), now=now())
        .entries
    )
    return [EntrySummary(**info(e)) for e in entries]


@router.get("/entries/{identifier}/{email}/{created}", summary="One entry, every term")
def api_entry(request: Request, identifier: str, email: str, created: str) -> Response:
    """The index columns plus ``entry``: every term of the verified entry."""
    entry = state_of(request).storage.get(identifier, email, created)
    return Response(entry_json(entry, now()), media_type="application/json")


@router.get("/tag/{email}/{tag}", response_model=EntrySummary, summary="Resolve a tag")
def api_tag(request: Request, email: str, tag: str) -> EntrySummary:
    return EntrySummary(**info(state_of(request).storage.by_tag(email, tag)))


@router.get("/endorsers", response_model=list[EndorserInfo], summary="Endorsers")
def api_endorsers(
    request: Request, limit: EndorserLimit = 100, offset: EndorserOffset = 0
) -> Response:
    """One page of endorsers by e-mail (``X-More: true`` when another follows), each with
    the fingerprint of the certificate its e-mail is bound to."""
    endorsers, more = state_of(request).storage.endorsers(limit=limit, offset=offset)
    return Response(
        "[" + ",".join(EndorserInfo(**e.__dict__).model_dump_json() for e in endorsers) + "]",
        media_type="application/json",
        headers={"X-More": "true" if more else "false"},
    )


@router.get("/endorsers/{email}", response_model=EndorserDetail, summary="One endorser")
def api_endorser(request: Request, email: str, query: Filters) -> EndorserDetail:
    storage = state_of(request).storage
    endorser = storage.endorser(email)
    entries = storage.find(
        Query(email=email, history=True, limit=query.limit, offset=query.offset), now=now()
    ).entries
    return _endorser_detail(endorser, entries)
