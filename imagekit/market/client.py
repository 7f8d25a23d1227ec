"""Talk to a marketplace server over HTTP.

The client never trusts the server: entries come back as the raw signed XML bytes, for the
caller to verify locally (``imagekit.signing.verify.verify_entry``). Summaries (``EntrySummary``)
are the server's index columns, good for listing and choosing, never for trusting.

The server is not trusted with where the client goes, either: the ``path`` of a summary is
followed only on the marketplace's own origin (scheme, host and port of ``base_url``), never
to an absolute URL elsewhere (a marketplace must not make its clients fetch from the
cloud's metadata service or an intranet), and every response is read up to a bound
(``MAX_ENTRY_BYTES`` for signed XML, ``MAX_RESPONSE_BYTES`` for the rest) while it streams.

Errors: NetworkError (unreachable, 5xx, a response past its bound, a path to another
origin), NotFound (404), Ambiguous (ID prefix matching several IDs), InvalidState (upload
not newer than the latest endorsement), InvalidMetadata (the server refused an upload),
InputError (other 4xx).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ..entry.xmlsafe import MAX_DOCUMENT_BYTES
from ..errors import (
    Ambiguous,
    InputError,
    InvalidMetadata,
    InvalidState,
    NetworkError,
    NotFound,
    Untrusted,
)
from .summary import EntrySummary

DEFAULT_TIMEOUT = 30.0
# An entry larger than the verifier would parse is refused while it arrives.
MAX_ENTRY_BYTES = MAX_DOCUMENT_BYTES
# JSON lists and summaries: a page of 500 summaries is well under 1 MiB.
MAX_RESPONSE_BYTES = 16 << 20
_XML = {"Accept": "application/xml"}


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """One page: ``total`` is None when more pages follow and ``count`` was not asked."""

    total: int | None
    more: bool
    entries: list[EntrySummary]


@dataclasses.dataclass(frozen=True)
class EndorserSummary:
    email: str
    entries: int
    latest_created: str
    fingerprint: str | None = None  # SHA-256 of the certificate the e-mail is bound to
    bound_via: str | None = None
    bound: str | None = None


def _seg(value: str) -> str:
    return quote(value, safe="@:+!$&'*=^`{|}~-._")


class MarketplaceClient:
    """A marketplace at ``base_url`` (e.g. ``http://127.0.0.1:8080``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": "imagekit"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MarketplaceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, limit: int = MAX_RESPONSE_BYTES, **kwargs: Any
    ) -> httpx.Response:
        """The response to ``path``, its body read while it streams and refused past
        ``limit`` bytes (decoded). Raises NetworkError and the 4xx families."""
        try:
            with self._http.stream(method, path, **kwargs) as streamed:
                declared = streamed.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise self._too_large(path, limit)
                body = bytearray()
                for chunk in streamed.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise self._too_large(path, limit)
        except httpx.HTTPError as e:
            raise NetworkError(
                f"marketplace {self.base_url} unreachable: {e}",
                hint="is the server running? (imagekit serve; setting: marketplace)",
            ) from e
        # the body is decoded already: drop what would make httpx decode it again
        headers = [
            (k, v)
            for k, v in streamed.headers.items()
            if k.lower() not in ("content-encoding", "content-length")
        ]
        response = httpx.Response(
            streamed.status_code, headers=headers, content=bytes(body), request=streamed.request
        )
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _too_large(self, path: str, limit: int) -> NetworkError:
        return NetworkError(f"marketplace {self.base_url}: {path} is larger than {limit} bytes")

    def _own_path(self, path: str) -> str:
        """``path`` if it names a resource on the marketplace's own origin (a path, or an
        absolute URL with the same scheme, host and port). Raises NetworkError."""
        parts = urlsplit(path)
        if parts.scheme or parts.netloc or not path.startswith("/") or "\\" in path:
            if not (parts.scheme and _origin(path) == _origin(self.base_url)):
                raise NetworkError(
                    f"marketplace {self.base_url} pointed at {path!r}, not a path of its own: "
                    "refused"
                )
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        return path

    # --- entries -------------------------------------------------------------------------

    def upload(self, xml: bytes) -> str:
        """Publish a signed entry; return its path (``/metadata/{id}/{email}/{created}``)."""
        response = self._request(
            "POST", "/metadata", content=xml, headers={"Content-Type": "application/xml"}
        )
        return response.headers["Location"]

    def entry_url(self, path: str) -> str:
        return self.base_url + path

    def get_entry(self, identifier: str, email: str, created: str) -> bytes:
        """The signed XML of one endorsement (``identifier`` may be a unique prefix)."""
        path = f"/metadata/{_seg(identifier)}/{_seg(email)}/{_seg(created)}"
        return self._request("GET", path, headers=_XML, limit=MAX_ENTRY_BYTES).content

    def get_path(self, path: str) -> bytes:
        """The signed XML at a path returned by ``upload`` or found in a summary: on the
        marketplace's own origin only (NetworkError otherwise)."""
        own = self._own_path(path)
        return self._request("GET", own, headers=_XML, limit=MAX_ENTRY_BYTES).content

    def by_tag(self, email: str, tag: str) -> bytes:
        """The signed XML of the endorser's newest non-deprecated entry tagged ``tag``."""
        path = f"/tag/{_seg(email)}/{_seg(tag)}"
        return self._request("GET", path, headers=_XML, limit=MAX_ENTRY_BYTES).content

    def search(
        self,
        *,
        identifier: str | None = None,
        email: str | None = None,
        os: str | None = None,
        os_version: str | None = None,
        arch: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        tag: str | None = None,
        location: str | None = None,
        q: str | None = None,
        history: bool = False,
        limit: int = 100,
        offset: int = 0,
        count: bool = False,
    ) -> SearchResult:
        """Summaries of matching entries, newest endorsement first (one page)."""
        params: dict[str, Any] = {
            "identifier": identifier,
            "email": email,
            "os": os,
            "os-version": os_version,
            "arch": arch,
            "kind": kind,
            "status": status,
            "tag": tag,
            "location": location,
            "q": q,
            "limit": limit,
            "offset": offset,
        }
        if history:
            params["history"] = "true"
        if count:
            params["count"] = "true"
        params = {k: v for k, v in params.items() if v is not None}
        data = self._request("GET", "/api/entries", params=params).json()
        return SearchResult(
            total=data["total"],
            more=data["more"],
            entries=[EntrySummary.from_dict(e) for e in data["entries"]],
        )

    def iter_search(self, *, page: int = 500, **filters: Any) -> Iterator[EntrySummary]:
        """Every matching summary, page by page."""
        offset = 0
        while True:
            result = self.search(limit=page, offset=offset, **filters)
            yield from result.entries
            offset += len(result.entries)
            if not result.entries or not result.more:
                return

    def current(self, identifier: str) -> list[EntrySummary]:
        """Each endorser's latest endorsement of ``identifier`` (or a unique prefix)."""
        data = self._request("GET", f"/api/entries/{_seg(identifier)}").json()
        return [EntrySummary.from_dict(e) for e in data]

    def current_entries(self, identifier: str) -> list[bytes]:
        """The signed XML of each endorser's latest endorsement of ``identifier``."""
        return [self.get_path(s.path) for s in self.current(identifier)]

    def history(self, identifier: str, email: str | None = None) -> list[EntrySummary]:
        """Every endorsement of ``identifier`` (optionally by one endorser), newest first."""
        return list(self.iter_search(identifier=identifier, email=email, history=True))

    def entry_json(self, identifier: str, email: str, created: str) -> dict[str, Any]:
        """Index columns plus every term (``entry``), as the server parsed them."""
        path = f"/api/entries/{_seg(identifier)}/{_seg(email)}/{_seg(created)}"
        result: dict[str, Any] = self._request("GET", path).json()
        return result

    def endorsers(self) -> list[EndorserSummary]:
        return [EndorserSummary(**e) for e in self._request("GET", "/api/endorsers").json()]


def _error(response: httpx.Response) -> Exception:
    message = response.text.strip().splitlines()[0] if response.text.strip() else ""
    message = message or f"HTTP {response.status_code}"
    kind = response.headers.get("X-Imagekit-Error", "")
    status = response.status_code
    if status == 404:
        return NotFound(message)
    if kind == "Ambiguous":
        return Ambiguous(message)
    if kind == "InvalidState" or status == 409:
        return InvalidState(message)
    if kind == "CertificateNotBound":  # the endorser e-mail belongs to another certificate
        return Untrusted(f"marketplace refused the entry: {message.removeprefix('refused: ')}")
    if status >= 500:
        return NetworkError(f"marketplace error {status}: {message}")
    if message.startswith("invalid metadata: "):
        return InvalidMetadata("refused-by-server", message.removeprefix("invalid metadata: "))
    return InputError(f"marketplace refused the request ({status}): {message}")
