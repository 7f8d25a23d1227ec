"""What a request carries in: the listing filters (query and path parts) and an upload's
body, read under its bounds and handed to ingest."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Query as Q
from starlette.requests import ClientDisconnect

from imagekit.errors import InputError

from ._state import state_of
from .config import ServerConfig
from .errors import PayloadTooLarge
from .security import check_upload
from .storage import STATUSES, Query, StoredEntry

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


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
        identifier=identifier or None,
        email=email or None,
        created=created or None,
        status=status or None,
        location=location or None,
        os=os or None,
        os_version=os_version or None,
        arch=arch or None,
        kind=kind or None,
        tag=tag or None,
        q=q or None,
        history=history,
        limit=limit,
        offset=offset,
        count=count,
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
    app = state_of(request)
    data = await read_upload(request, app.config)
    from anyio.to_thread import run_sync

    moment = datetime.now(UTC)
    row = await run_sync(lambda: app.ingestor.ingest(data, now=moment))
    return await run_sync(lambda: app.storage.add(row, now=moment))
