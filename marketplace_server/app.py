"""The marketplace web application: ``create_app(config)``.

Entries are immutable once stored, so the single-entry GET (``/metadata/{id}/{email}/
{created}``, XML, no query) is answered ahead of FastAPI's routing from an in-memory LRU
of the signed bytes, with ``ETag`` = sha256 and ``Cache-Control: immutable``. Everything
else (negotiation, prefixes, lists, pages, uploads) goes through the FastAPI routes in
``api`` and ``pages``.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from . import __version__, api, pages
from ._state import ServerState
from .config import ServerConfig
from .errors import (
    data_error_handler,
    http_error_handler,
    imagekit_error_handler,
    validation_error_handler,
)
from .html import INLINE_CSS, STATIC_DIR
from .ingest import Ingestor, bind_existing
from .security import page_policy, secure_send
from .storage import Storage

_Cached = tuple[bytes, bytes, list[tuple[bytes, bytes]]]  # body, quoted etag, headers


class EntryCache:
    """LRU of signed entries by key. Touched only from the event loop thread, except
    ``put`` (locked) from worker threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, str], _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> _Cached | None:
        item = self._items.get(key)
        if item is not None:
            with contextlib.suppress(KeyError):  # evicted meanwhile
                self._items.move_to_end(key)
        return item

    def put(self, key: tuple[str, str, str], body: bytes, etag: str) -> _Cached:
        quoted = f'"{etag}"'.encode()
        headers = [
            (b"content-type", b"application/xml"),
            (b"content-length", str(len(body)).encode()),
            (b"etag", quoted),
            (b"cache-control", b"public, max-age=31536000, immutable"),
            (b"vary", b"accept"),
        ]
        item = (body, quoted, headers)
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item


class MarketplaceApp(FastAPI):
    """FastAPI, with the immutable-entry GET served before any routing or middleware."""

    config: ServerConfig
    storage: Storage
    ingestor: Ingestor
    cache: EntryCache
    page_csp: str

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            send = secure_send(send, scope["path"], self.page_csp)
        if scope["type"] == "http" and (
            b"%00" in scope.get("raw_path", b"") or b"%00" in scope["query_string"]
        ):
            # No name, address or filter holds a NUL (and PostgreSQL refuses to compare one).
            await _plain(send, 400, "invalid request: NUL character in the URL")
            return
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and not scope["query_string"]
            and scope["path"].startswith("/metadata/")
        ):
            parts = scope["path"][10:].split("/")
            if len(parts) == 3 and len(parts[0]) == 27 and await self._fast(scope, send, parts):
                return
        await super().__call__(scope, receive, send)

    async def _fast(self, scope: Any, send: Any, parts: list[str]) -> bool:
        match = None
        for name, value in scope["headers"]:
            if name == b"accept":
                if b"html" in value or b"json" in value:
                    return False  # full negotiation in the routes
            elif name == b"if-none-match":
                match = value
        key = (parts[0], parts[1], parts[2])
        item = self.cache.get(key)
        if item is None:
            found = await anyio.to_thread.run_sync(self.storage.get_xml, *key)
            if found is None:
                return False  # 404 (or a prefix) answered by the routes
            item = self.cache.put(key, *found)
        body, quoted, headers = item
        if match is not None and (match == quoted or match == b"*"):
            await send({"type": "http.response.start", "status": 304, "headers": headers[2:]})
            await send({"type": "http.response.body", "body": b""})
            return True
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body})
        return True


async def _plain(send: Any, status: int, message: str) -> None:
    body = (message + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"x-imagekit-error", b"InputError"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(config: ServerConfig) -> MarketplaceApp:
    """Build the application; creates the data directory and the schema if missing."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app = MarketplaceApp(
        title="imagekit marketplace",
        version=__version__,
        description=(
            "A registry of signed virtual-machine appliance metadata (StratusLab profile). "
            "The JSON API lives under /api/; the StratusLab-compatible routes under "
            "/metadata, /tag and /endorsers return the signed XML byte-for-byte."
        ),
    )
    app.config = config
    app.page_csp = page_policy(INLINE_CSS)
    app.storage = Storage(config.database_url)
    app.storage.create_schema()
    bind_existing(app.storage, now=datetime.now(UTC))
    app.ingestor = Ingestor(config)
    app.cache = EntryCache(config.cache_entries)
    app.state.imagekit = ServerState(config, app.storage, app.ingestor)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    from imagekit.errors import ImagekitError

    app.add_exception_handler(ImagekitError, imagekit_error_handler)
    app.add_exception_handler(DataError, data_error_handler)
    app.include_router(api.router)
    app.include_router(api.compat_router)
    app.include_router(pages.router)
    # the style sheet and the copy button's script: files, so a strict CSP can allow them
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if config.files_dir is not None:
        Path(config.files_dir).mkdir(parents=True, exist_ok=True)
        app.mount("/files", StaticFiles(directory=config.files_dir), name="files")
    return app
