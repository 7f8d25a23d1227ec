"""Routes for programs: the StratusLab-compatible ones and the JSON API under ``/api/``.

StratusLab routes answer with the signed XML by default (JSON or HTML by ``Accept`` or
``?media=``); lists of XML are the entries' bytes, without their XML declarations, inside
one ``<metadata>`` element. ``X-Total-Count`` carries the size of the unpaged result.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi import Query as Q
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from imagekit.errors import InputError

from .app import app_of
from .config import ServerConfig
from .errors import PayloadTooLarge
from .media import wants
from .security import check_upload
from .storage import STATUSES, Endorser, Page, Query, Storage, StoredEntry

router = APIRouter(prefix="/api", tags=["JSON API"])
compat_router = APIRouter(tags=["StratusLab-compatible (XML by default)"])

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_XML_DECL = re.compile(rb"^\s*(\xef\xbb\xbf)?\s*<\?xml[^>]*\?>\s*")


# --- models (the OpenAPI document describes these) ------------------------------------


class EntryInfo(BaseModel):
    identifier: str
    email: str
    created: str
    latest: bool
    status: Literal["valid", "expired", "deprecated"]
    valid: str | None
    deprecated: str | None
    os: str | None
    os_version: str | None
    arch: str | None
    kind: str | None
    tag: str | None
    title: str | None
    description: str | None
    locations: list[str]
    sha1: str
    bytes: int
    etag: str
    uploaded: str
    path: str


class EntryList(BaseModel):
    total: int | None = Field(
        description="all matches; null when more pages follow and count=true was not given"
    )
    more: bool = Field(description="another page follows")
    offset: int
    limit: int
    entries: list[EntryInfo]


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
    history: list[EntryInfo]


# --- shared helpers -----------------------------------------------------------------------


def filters(
    identifier: str | None = None,
    email: str | None = None,
    created: str | None = None,
    status: Annotated[str | None, Q(description="valid, expired or deprecated")] = None,
    location: str | None = None,
    os: str | None = None,
    os_version: Annotated[str | None, Q(alias="os-version")] = None,
    arch: str | None = None,
    kind: str | None = None,
    tag: str | None = None,
    q: Annotated[str | None, Q(max_length=200, description="words, each a prefix")] = None,
    history: bool = False,
    limit: Annotated[int, Q(ge=1, le=1000)] = 100,
    offset: Annotated[int, Q(ge=0, le=10_000_000)] = 0,
    count: Annotated[bool, Q(description="count every match (slower)")] = False,
) -> Query:
    """Filters shared by every listing (query parameters)."""
    if status and status not in STATUSES:
        raise InputError(f"invalid request: status must be one of {', '.join(STATUSES)}")
    if created and not _DATE.match(created):
        raise InputError("invalid request: created must look like 2024-01-31T12:00:00Z")
    return Query(
        identifier=identifier or None, email=email or None, created=created or None,
        status=status or None, location=location or None, os=os or None,
        os_version=os_version or None,
        arch=arch or None, kind=kind or None, tag=tag or None, q=q or None, history=history,
        limit=limit, offset=offset, count=count,
    )


Filters = Annotated[Query, Depends(filters)]


def classify(query: Query, parts: list[str]) -> Query:
    """Apply path parts of ``/metadata/{a}/{b}``: an e-mail has ``@``, a date looks like one,
    anything else is an identifier (or a prefix of one)."""
    values: dict[str, str] = {}
    for part in parts:
        if "@" in part:
            name = "email"
        elif _DATE.match(part):
            name = "created"
        else:
            name = "identifier"
        if name in values:
            raise InputError(f"invalid request: two {name} parts in the path")
        values[name] = part
    return Query(**{**query.__dict__, **values})


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
        from .pages import entry_page

        return entry_page(request, entry)
    if media == "json":
        from .render import entry_json

        return Response(entry_json(entry, now()), media_type="application/json", headers=headers)
    assert entry.xml is not None
    headers["ETag"] = f'"{entry.etag}"'
    headers["Cache-Control"] = "public, max-age=31536000, immutable"
    if request.query_params.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="{entry.identifier}.xml"'
    return Response(entry.xml, status_code=status_code, media_type="application/xml",
                    headers=headers)


def list_response(request: Request, query: Query) -> Response:
    media = wants(request)
    if media == "html":
        from .pages import catalogue_page

        return catalogue_page(request, query)
    storage = app_of(request).storage
    page = storage.find(query, now=now())
    headers = {"Vary": "Accept", "X-More": "true" if page.more else "false"}
    if page.total is not None:
        headers["X-Total-Count"] = str(page.total)
    if media == "json":
        return Response(
            entry_list(page, query).model_dump_json(),
            media_type="application/json", headers=headers,
        )
    return StreamingResponse(xml_list(storage, page.entries), media_type="application/xml",
                             headers=headers)


def entry_list(page: Page, query: Query) -> EntryList:
    return EntryList(total=page.total, more=page.more, offset=query.offset, limit=query.limit,
                     entries=[EntryInfo(**info(e)) for e in page.entries])


async def read_upload(request: Request, config: ServerConfig) -> bytes:
    """The uploaded entry: the raw body, or the first file (or ``metadata`` field) of a
    multipart form. Bodies past the limit are refused without reading them whole; so are
    other media types and cross-origin requests from browsers (``security.check_upload``)."""
    kind = check_upload(request)
    limit = config.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + 64 * 1024:  # room for multipart framing
                raise PayloadTooLarge(f"request body larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as e:  # gone, or cut off by the body deadline (_http)
        raise InputError("invalid request: the body ended early") from e
    body = b"".join(chunks)
    if kind == "multipart/form-data":
        request._body = body  # let Starlette parse what we already read
        try:
            form = await request.form()
        except Exception as e:  # python-multipart raises its own types on broken framing
            raise InputError(f"invalid request: malformed multipart body: {e}") from e
        data = None
        for name in ("metadata", "file", "metadatafile"):
            value = form.get(name)
            if value is not None:
                data = value if isinstance(value, str) else await value.read()
                break
        if data is None:
            for value in form.values():
                if not isinstance(value, str):
                    data = await value.read()
                    break
        if data is None:
            raise InputError("invalid request: no metadata file in the form")
        body = data.encode() if isinstance(data, str) else data
    if len(body) > limit:
        raise PayloadTooLarge(f"entry larger than {limit} bytes")
    if not body.strip():
        raise InputError("invalid metadata: empty body")
    return body


async def ingest(request: Request) -> StoredEntry:
    app = app_of(request)
    data = await read_upload(request, app.config)
    from anyio.to_thread import run_sync

    moment = now()
    row = await run_sync(lambda: app.ingestor.ingest(data, now=moment))
    return await run_sync(lambda: app.storage.add(row, now=moment))


# --- StratusLab-compatible routes ---------------------------------------------------------

_XML_BODY = {"type": "string", "description": "a signed metadata entry (RDF/XML)"}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/xml": {"schema": _XML_BODY},
            "text/xml": {"schema": _XML_BODY},
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"metadata": {"type": "string", "format": "binary"}},
            }},
        },
    }
}


@compat_router.post("/metadata", status_code=201, summary="Upload a signed entry",
                    openapi_extra=_UPLOAD_BODY)
async def post_metadata(request: Request) -> Response:
    """Raw XML body (``application/xml`` or ``text/xml``) or a multipart form; 201 with
    ``Location`` of the stored entry. 415 for other types, 403 for a browser's cross-origin
    request or an endorser e-mail bound to another certificate."""
    entry = await ingest(request)
    media = wants(request, default="text")
    if media == "json":
        return Response(EntryInfo(**info(entry)).model_dump_json(), status_code=201,
                        media_type="application/json", headers={"Location": entry.path})
    return Response(entry.path + "\n", status_code=201, media_type="text/plain",
                    headers={"Location": entry.path})


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
    entry = app_of(request).storage.get(identifier, email, created)
    return entry_response(request, entry)


@compat_router.get("/tag/{email}/{tag}", summary="The endorser's newest entry with a tag")
def get_tag(request: Request, email: str, tag: str) -> Response:
    """Newest current, non-deprecated entry whose ``dcterms:alternative`` is ``tag``."""
    return entry_response(request, app_of(request).storage.by_tag(email, tag))


EndorserLimit = Annotated[int, Q(ge=1, le=1000)]
EndorserOffset = Annotated[int, Q(ge=0, le=10_000_000)]


@compat_router.get("/endorsers", summary="Endorsers")
def get_endorsers(request: Request, limit: EndorserLimit = 100, offset: EndorserOffset = 0
                  ) -> Response:
    """One page of endorsers by e-mail; ``X-More: true`` when another page follows."""
    endorsers, more = app_of(request).storage.endorsers(limit=limit, offset=offset)
    if wants(request, default="json") == "html":
        from .pages import endorsers_page

        return endorsers_page(request, endorsers, limit=limit, offset=offset, more=more)
    return Response(
        "[" + ",".join(EndorserInfo(**e.__dict__).model_dump_json() for e in endorsers) + "]",
        media_type="application/json", headers={"X-More": "true" if more else "false"},
    )


@compat_router.get("/endorsers/{email}", summary="One endorser and their entries")
def get_endorser(request: Request, email: str, query: Filters) -> Response:
    storage = app_of(request).storage
    endorser = storage.endorser(email)
    if wants(request, default="json") == "html":
        from .pages import endorser_page

        return endorser_page(request, endorser, query)
    entries = storage.find(Query(email=email, history=True, limit=query.limit,
                                 offset=query.offset), now=now()).entries
    return Response(_endorser_detail(endorser, entries).model_dump_json(),
                    media_type="application/json")


def _endorser_detail(endorser: Endorser, entries: list[StoredEntry]) -> EndorserDetail:
    return EndorserDetail(**endorser.__dict__, history=[EntryInfo(**info(e)) for e in entries])


# --- JSON API -------------------------------------------------------------------------------


@router.get("/entries", response_model=EntryList, summary="Search entries")
def api_entries(request: Request, query: Filters) -> Response:
    """Current entries (each (ID, endorser)'s newest endorsement; ``history=true`` for all),
    newest first. ``q``: words, each matching the start of a word of the title,
    description, tag, OS, e-mail or ID."""
    page = app_of(request).storage.find(query, now=now())
    # a Response skips FastAPI's second validation of the model (the model documents it)
    return Response(entry_list(page, query).model_dump_json(), media_type="application/json")


@router.post("/entries", response_model=EntryInfo, status_code=201, summary="Upload",
             openapi_extra=_UPLOAD_BODY)
async def api_upload(request: Request) -> Response:
    """Upload a signed entry (raw XML body); 201 with the stored entry's summary."""
    entry = await ingest(request)
    return Response(EntryInfo(**info(entry)).model_dump_json(), status_code=201,
                    media_type="application/json", headers={"Location": entry.path})


@router.get("/entries/{identifier}", response_model=list[EntryInfo], summary="Entries of an ID")
def api_entries_of(request: Request, identifier: str, history: bool = False) -> list[EntryInfo]:
    """Every endorser's current entry for the ID (or a unique prefix); all with history."""
    entries = app_of(request).storage.find(
        Query(identifier=identifier, history=history, limit=1000), now=now()
    ).entries
    return [EntryInfo(**info(e)) for e in entries]


@router.get("/entries/{identifier}/{email}/{created}", summary="One entry, every term")
def api_entry(request: Request, identifier: str, email: str, created: str) -> Response:
    """The index columns plus ``entry``: every term of the verified entry."""
    from .render import entry_json

    entry = app_of(request).storage.get(identifier, email, created)
    return Response(entry_json(entry, now()), media_type="application/json")


@router.get("/tag/{email}/{tag}", response_model=EntryInfo, summary="Resolve a tag")
def api_tag(request: Request, email: str, tag: str) -> EntryInfo:
    return EntryInfo(**info(app_of(request).storage.by_tag(email, tag)))


@router.get("/endorsers", response_model=list[EndorserInfo], summary="Endorsers")
def api_endorsers(request: Request, limit: EndorserLimit = 100, offset: EndorserOffset = 0
                  ) -> Response:
    """One page of endorsers by e-mail (``X-More: true`` when another follows), each with
    the fingerprint of the certificate its e-mail is bound to."""
    endorsers, more = app_of(request).storage.endorsers(limit=limit, offset=offset)
    return Response(
        "[" + ",".join(EndorserInfo(**e.__dict__).model_dump_json() for e in endorsers) + "]",
        media_type="application/json", headers={"X-More": "true" if more else "false"},
    )


@router.get("/endorsers/{email}", response_model=EndorserDetail, summary="One endorser")
def api_endorser(request: Request, email: str, query: Filters) -> EndorserDetail:
    storage = app_of(request).storage
    endorser = storage.endorser(email)
    entries = storage.find(Query(email=email, history=True, limit=query.limit,
                                 offset=query.offset), now=now()).entries
    return _endorser_detail(endorser, entries)
