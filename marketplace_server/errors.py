"""Every error becomes one line: plain text for programs, a small page for browsers.

Status codes: 400 bad input (invalid metadata, bad query values: FastAPI's 422 is turned
into 400 so every refusal of bad input has the same shape), 404 unknown, 409 conflicts
(an upload not newer than the latest endorsement, an ambiguous ID prefix), 413 oversize,
403 an upload signed by a certificate the endorser e-mail is not bound to or a browser's
cross-origin upload, 415 an upload neither XML nor the form.
``X-Imagekit-Error`` names the error class so clients can map it back exactly.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from imagekit.errors import (
    Ambiguous,
    ImagekitError,
    InputError,
    InvalidMetadata,
    InvalidState,
    NotFound,
    VerificationError,
)

from .html import render
from .media import wants
from .security import CrossOriginRefused, UnsupportedMediaType
from .storage import CertificateNotBound


class PayloadTooLarge(InputError):
    pass


def status_of(error: ImagekitError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Ambiguous | InvalidState):
        return 409
    if isinstance(error, PayloadTooLarge):
        return 413
    if isinstance(error, CertificateNotBound | CrossOriginRefused):
        return 403
    if isinstance(error, UnsupportedMediaType):
        return 415
    if isinstance(error, InputError | VerificationError):
        return 400
    return 500


def message_of(error: ImagekitError) -> str:
    if isinstance(error, CertificateNotBound):
        return f"refused: {error}"
    if isinstance(error, InvalidMetadata | VerificationError):
        return f"invalid metadata: {error}"
    return str(error)


def error_response(request: Request, status: int, message: str, kind: str) -> Response:
    line = " ".join(message.split())  # exactly one line
    headers = {"X-Imagekit-Error": kind}
    if wants(request, default="text") == "html":
        return render(
            request,
            "error.html",
            {"status": status, "message": line},
            status_code=status,
            headers=headers,
        )
    return Response(line + "\n", status_code=status, media_type="text/plain", headers=headers)


async def imagekit_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ImagekitError)
    return error_response(request, status_of(exc), message_of(exc), type(exc).__name__)


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path"))
    message = f"invalid request: {where}: {first.get('msg', 'bad value')}"
    return error_response(request, 400, message, "InputError")


async def data_error_handler(request: Request, exc: Exception) -> Response:
    """A value the database cannot even compare (PostgreSQL refuses NUL characters)."""
    return error_response(
        request, 400, "invalid request: a value the database refuses", "InputError"
    )


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "error"
    if exc.status_code == 404 and message == "Not Found":
        message = f"not found: {request.url.path}"
    return error_response(request, exc.status_code, message, "HTTPError")
