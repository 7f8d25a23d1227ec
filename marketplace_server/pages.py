"""The HTML routes of people's pages: the catalogue and the upload form (pages themselves
are rendered by ``html``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ._state import state_of
from .html import catalogue_page, entry_href, render
from .params import Filters, ingest

router = APIRouter(include_in_schema=False)


@router.get("/")
@router.get("/browse")
def browse(request: Request, query: Filters) -> Response:
    return catalogue_page(request, query)


@router.get("/upload")
def upload_form(request: Request) -> Response:
    return render(request, "upload.html", {"mode": state_of(request).ingestor.mode})


@router.post("/upload")
async def upload(request: Request) -> Response:
    entry = await ingest(request)
    return RedirectResponse(entry_href(entry) + "?media=html", status_code=303)
