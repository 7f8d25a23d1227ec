"""MarketplaceClient against a real server: raw signed bytes out, typed errors."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from imagekit.errors import Ambiguous, InvalidMetadata, InvalidState, NetworkError, NotFound
from imagekit.market.client import MAX_ENTRY_BYTES, MarketplaceClient
from tests.plugins.market import draft_entry, sign

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def client(marketplace):
    with MarketplaceClient(marketplace.url) as c:
        yield c


def test_upload_get_and_search(client, make_endorser, make_signed):
    me = make_endorser()
    data = make_signed(me, ago=60, title="client box", tag="cb", os_name="fedora")
    path = client.upload(data)
    ident, email, created = path.split("/")[2:5]
    assert email == me.email
    assert client.get_entry(ident, email, created) == data
    assert client.get_entry(ident[:22], email, created) == data
    assert client.get_path(path) == data
    assert client.by_tag(me.email, "cb") == data
    result = client.search(email=me.email, os="fedora")
    assert result.total == 1
    summary = result.entries[0]
    assert (summary.identifier, summary.title, summary.status) == (ident, "client box", "valid")
    assert client.current_entries(ident) == [data]
    assert client.entry_json(ident, email, created)["entry"]["alternative"] == "cb"
    assert me.email in {e.email for e in client.endorsers()}


def test_history_and_paging(client, make_endorser):
    me = make_endorser()
    image = os.urandom(50)
    for i, ago in enumerate((300, 200, 100)):
        client.upload(sign(draft_entry(image, title=f"v{i}"), me, ago=ago))
    ident = client.search(email=me.email).entries[0].identifier
    assert [e.title for e in client.history(ident)] == ["v2", "v1", "v0"]
    assert [e.title for e in client.iter_search(email=me.email, history=True, page=2)] == [
        "v2",
        "v1",
        "v0",
    ]


def test_errors_are_typed(client, make_endorser, make_signed):
    me = make_endorser()
    data = make_signed(me, ago=60)
    client.upload(data)
    with pytest.raises(InvalidState):
        client.upload(data)
    with pytest.raises(InvalidMetadata):
        client.upload(b"<nope")
    with pytest.raises(NotFound):
        client.by_tag(me.email, "missing")
    with pytest.raises(NotFound):
        client.current("A" * 27)
    idents = [e.identifier for e in client.search(limit=1000).entries]
    firsts = [i[0] for i in idents]
    shared = next((c for c in firsts if firsts.count(c) > 1), None)
    if shared is None:  # make two IDs share a first character
        import hashlib

        from imagekit.image.identifier import sha1_to_id

        while shared is None:
            image = os.urandom(16)
            ident = sha1_to_id(hashlib.sha1(image).hexdigest())
            if ident[0] in firsts:
                client.upload(sign(draft_entry(image), me, ago=30))
                shared = ident[0]
    with pytest.raises(Ambiguous):
        client.current(shared)


def test_unreachable_server_is_a_network_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with MarketplaceClient(f"http://127.0.0.1:{port}", timeout=2) as c, pytest.raises(NetworkError):
        c.search()


# --- the server does not choose where the client goes ----------------------------------


def _summary(path: str) -> dict[str, object]:
    return {
        "identifier": "MMZu9WvwKIro-rtBQfDk4PsKO7_",
        "email": "a@example.org",
        "created": "2026-01-01T00:00:00Z",
        "latest": True,
        "status": "valid",
        "valid": None,
        "deprecated": None,
        "os": None,
        "os_version": None,
        "arch": None,
        "kind": None,
        "tag": None,
        "title": None,
        "description": None,
        "locations": [],
        "sha1": "00",
        "bytes": 1,
        "etag": "",
        "uploaded": "",
        "path": path,
    }


class _Recorder:
    """A marketplace that answers a summary pointing at ``path``, and records requests."""

    def __init__(self, path: str, body: bytes = b"<rdf:RDF/>") -> None:
        self.path = path
        self.body = body
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        if request.url.path.startswith("/api/entries/"):
            return httpx.Response(200, json=[_summary(self.path)])
        return httpx.Response(200, content=self.body)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("http://169.254.169.254/latest/meta-data/", id="absolute-url-elsewhere"),
        pytest.param("//127.0.0.2:9/metadata/x", id="scheme-relative-url"),
        pytest.param("https://127.0.0.1:8080/metadata/x", id="same-host-other-scheme"),
        pytest.param("http://127.0.0.1:8081/metadata/x", id="same-host-other-port"),
        pytest.param("metadata/x", id="relative-path"),
    ],
)
def test_summary_path_to_another_origin_refused(path: str):
    server = _Recorder(path)
    client = MarketplaceClient("http://127.0.0.1:8080", transport=httpx.MockTransport(server))
    with pytest.raises(NetworkError, match="not a path of its own"):
        client.current_entries("MMZu9WvwKIro-rtBQfDk4PsKO7_")
    assert server.seen == ["http://127.0.0.1:8080/api/entries/MMZu9WvwKIro-rtBQfDk4PsKO7_"]


def test_summary_path_as_an_absolute_url_of_the_marketplace_followed():
    server = _Recorder("http://127.0.0.1:8080/metadata/x/y/z")
    client = MarketplaceClient("http://127.0.0.1:8080", transport=httpx.MockTransport(server))
    assert client.current_entries("MMZu9WvwKIro-rtBQfDk4PsKO7_") == [b"<rdf:RDF/>"]
    assert server.seen[-1] == "http://127.0.0.1:8080/metadata/x/y/z"


def test_oversized_entry_from_the_marketplace_refused():
    server = _Recorder("/metadata/x/y/z", body=b"<" * (MAX_ENTRY_BYTES + 1))
    client = MarketplaceClient("http://127.0.0.1:8080", transport=httpx.MockTransport(server))
    with pytest.raises(NetworkError, match=f"larger than {MAX_ENTRY_BYTES} bytes"):
        client.current_entries("MMZu9WvwKIro-rtBQfDk4PsKO7_")


def test_endless_response_from_the_marketplace_refused_while_streaming():
    def endless() -> Iterator[bytes]:
        while True:
            yield b"[" * 65536

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())  # no Content-Length

    client = MarketplaceClient("http://127.0.0.1:8080", transport=httpx.MockTransport(handler))
    with pytest.raises(NetworkError, match="larger than"):
        client.current("MMZu9WvwKIro-rtBQfDk4PsKO7_")
