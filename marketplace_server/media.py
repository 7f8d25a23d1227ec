"""Content negotiation: ``?media=xml|json|html`` wins, then the Accept header's q-values."""

from __future__ import annotations

from starlette.requests import Request

from imagekit.errors import InputError

_TYPES = {
    "application/xml": "xml",
    "text/xml": "xml",
    "application/json": "json",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/plain": "text",
}
MEDIA = ("xml", "json", "html")


def wants(request: Request, *, default: str = "xml") -> str:
    """The representation the client asked for (``default`` for */* or no preference)."""
    media = request.query_params.get("media")
    if media is not None:
        if media not in MEDIA:
            if default == "text":  # rendering an error: never raise again
                return "text"
            raise InputError(f"invalid request: media must be one of {', '.join(MEDIA)}")
        return media
    best, best_q = default, 0.0
    for i, part in enumerate(request.headers.get("accept", "").split(",")):
        fields = part.strip().split(";")
        kind = _TYPES.get(fields[0].strip().lower())
        if kind is None:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= i * 1e-6  # earlier wins among equals
        if q > best_q:
            best, best_q = kind, q
    return best
