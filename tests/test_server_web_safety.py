"""What stops a web page from using the registry against its visitors: location schemes,
links, security headers, and uploads a browser could be made to send from another site."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re

import httpx
import pytest

from imagekit.entry.model import Checksum, Entry, LocationScheme, check_location
from imagekit.errors import InvalidMetadata
from tests.plugins.market import draft_entry, resign, sign

pytestmark = pytest.mark.timeout(300)

XML = {"Content-Type": "application/xml"}
GOOD = "https://images.example.org/debian.img"
SHA1 = "c319bbd5afc0a22ba3eaed0507c39383ec28eeff"
ID = "MMZu9WvwKIro-rtBQfDk4PsKO7_"

HOSTILE_LOCATIONS = [
    pytest.param("javascript:alert(document.domain)", id="javascript"),
    pytest.param("JaVaScRiPt:alert(1)", id="javascript-mixed-case"),
    pytest.param("data:text/html,<script>alert(1)</script>", id="data"),
    pytest.param("vbscript:msgbox(1)", id="vbscript"),
    pytest.param("ftp://images.example.org/x.img", id="ftp"),
    pytest.param("//images.example.org/x.img", id="scheme-relative"),
    pytest.param("https://images.example.org@evil.example/x.img", id="credentials"),
    pytest.param("https:///x.img", id="no-host"),
    pytest.param("http://images.example.org:99999/x.img", id="bad-port"),
    pytest.param("s3://bucket-only", id="s3-without-key"),
    pytest.param("file://evil.example/etc/passwd", id="file-with-host"),
    pytest.param("https://images.example.org/" + "a" * 3000, id="overlong"),
]


def entry_with(location: str) -> Entry:
    return Entry(
        identifier=ID,
        bytes=1,
        checksums=(Checksum("SHA-1", SHA1),),  # type: ignore[arg-type]
        locations=(location,),
    )


@pytest.mark.parametrize("location", HOSTILE_LOCATIONS)
def test_entry_model_refuses_hostile_location(location):
    with pytest.raises(InvalidMetadata) as caught:
        entry_with(location)
    assert caught.value.rule == "bad-location"


@pytest.mark.parametrize(
    "location, scheme",
    [
        ("http://10.0.0.1:8080/x.img", "http"),
        (GOOD, "https"),
        ("s3://images/debian/x.img", "s3"),
        ("file:///srv/images/x.img", "file"),
        ("file://localhost/srv/x.img", "file"),
    ],
)
def test_entry_model_accepts_http_https_s3_file(location, scheme):
    assert entry_with(location).locations == (location,)
    assert check_location(location) is LocationScheme(scheme)


@pytest.fixture
def http(marketplace):
    with httpx.Client(base_url=marketplace.url, timeout=30) as client:
        yield client


def hostile_entry(endorser, location: str) -> bytes:
    """A signed entry carrying ``location``, made without the library's checks."""
    signed = sign(draft_entry(locations=(GOOD,)), endorser, ago=60)
    escaped = location.replace("&", "&amp;").replace("<", "&lt;").encode()
    return resign(signed, endorser, GOOD.encode(), escaped)


@pytest.mark.parametrize("location", HOSTILE_LOCATIONS)
def test_upload_with_hostile_location_refused(http, make_endorser, location):
    r = http.post("/metadata", content=hostile_entry(make_endorser(), location), headers=XML)
    assert r.status_code == 400, r.text
    assert r.text.startswith("invalid metadata: bad-location: ") and r.text.count("\n") == 1


def test_file_location_refused_unless_the_server_allows_it(http, start_marketplace, make_endorser):
    me = make_endorser()
    data = sign(draft_entry(locations=("file:///srv/images/x.img",)), me, ago=60)
    r = http.post("/metadata", content=data, headers=XML)
    assert (r.status_code, r.text) == (
        400,
        "invalid metadata: file-location: this registry does not accept file: locations\n",
    )
    local = start_marketplace(extra=("--allow-file-locations",))
    assert httpx.post(local.url + "/metadata", content=data, headers=XML).status_code == 201


def test_entry_page_links_only_http(marketplace, http, make_endorser):
    """Rows stored before locations were checked are shown, never linked, unless http(s)."""
    import dataclasses

    from marketplace_server.config import ServerConfig
    from marketplace_server.ingest import Ingestor
    from marketplace_server.storage import Storage

    me = make_endorser()
    now = dt.datetime.now(dt.UTC)
    row = Ingestor(ServerConfig(data_dir=marketplace.data_dir)).ingest(
        sign(draft_entry(locations=(GOOD,)), me, ago=60), now=now
    )
    legacy = ("javascript:alert(document.cookie)", "data:text/html,x", GOOD)
    storage = Storage(f"sqlite:///{marketplace.data_dir / 'marketplace.sqlite3'}")
    stored = storage.add(dataclasses.replace(row, locations=legacy), now=now)
    storage.close()
    page = http.get(stored.path, params={"media": "html"}).text
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert GOOD in hrefs
    assert not [h for h in hrefs if h.lower().startswith(("javascript:", "data:"))]
    assert "javascript:alert(document.cookie)" in page  # shown as text


def header_names(r: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in r.headers.items()}


def test_pages_carry_a_strict_content_security_policy(http, make_endorser):
    me = make_endorser()
    loc = http.post("/metadata", content=sign(draft_entry(), me, ago=60), headers=XML)
    path = loc.headers["Location"]
    pages = [
        http.get("/browse"),
        http.get("/upload"),
        http.get("/endorsers?media=html"),
        http.get(path, params={"media": "html"}),
        http.get("/no/such/page", headers={"Accept": "text/html"}),
    ]
    for r in pages:
        h = header_names(r)
        assert r.headers["content-type"].startswith("text/html"), r.url
        csp = h["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        # no inline script runs: only the registry's own script file (the copy button)
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert re.search(r"<script(?![^>]*\bsrc=\"/static/)", r.text) is None
        assert "form-action 'self'" in csp and "base-uri 'none'" in csp
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "same-origin"
        # the one inline style block is the one the policy allows
        style = re.search(r"<style>(.*?)</style>", r.text, re.S)
        assert style is not None
        digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp


def test_signed_xml_and_json_are_sandboxed(http, make_endorser):
    """Foreign-namespace elements are kept in entries: opened in a browser, the raw XML must
    not run an XHTML script hidden in one."""
    me = make_endorser()
    path = http.post("/metadata", content=sign(draft_entry(), me, ago=60), headers=XML).headers[
        "Location"
    ]
    for r in (
        http.get(path),
        http.get(path),
        http.get(path, params={"media": "json"}),
        http.get("/metadata"),
        http.get("/api/entries"),
    ):
        h = header_names(r)
        assert r.status_code == 200
        assert "sandbox" in h["content-security-policy"]
        assert "default-src 'none'" in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("route", ["/metadata", "/upload", "/api/entries"])
def test_text_plain_upload_from_any_origin_refused(http, make_endorser, route):
    """``fetch(url, {method: "POST", mode: "no-cors", body: xml})`` sends text/plain: no
    preflight, so the type itself must be refused, with or without an Origin."""
    me = make_endorser()
    data = sign(draft_entry(), me, ago=60)
    for headers in (
        {"Content-Type": "text/plain;charset=UTF-8"},
        {"Content-Type": "text/plain", "Origin": http.base_url.__str__().rstrip("/")},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ):
        r = http.post(route, content=data, headers=headers)
        assert r.status_code == 415, (headers, r.text)
        assert r.text.startswith("unsupported media type") and r.text.count("\n") == 1
    assert http.get("/api/entries", params={"email": me.email}).json()["entries"] == []


@pytest.mark.parametrize("route", ["/metadata", "/upload", "/api/entries"])
def test_cross_origin_form_post_refused(http, make_endorser, route):
    """A form on another site, posted by the visitor's browser (it sends its Origin)."""
    me = make_endorser()
    data = sign(draft_entry(), me, ago=60)
    files = {"metadata": ("entry.xml", data, "application/xml")}
    own = str(http.base_url).rstrip("/")
    for extra in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": own + ".evil.example"},
        {"Origin": own + "/"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        r = http.post(route, files=files, headers=extra)
        assert r.status_code == 403, (extra, r.text)
        assert r.text.startswith("refused: cross-origin upload") and r.text.count("\n") == 1
    r = http.post(route, content=data, headers={**XML, "Origin": "http://evil.example"})
    assert r.status_code == 403
    assert http.get("/api/entries", params={"email": me.email}).json()["entries"] == []


def test_same_origin_form_and_programs_still_upload(http, make_endorser):
    me = make_endorser()
    own = str(http.base_url).rstrip("/")
    image = os.urandom(64)
    files = {"metadata": ("entry.xml", sign(draft_entry(image), me, ago=300), "application/xml")}
    r = http.post("/upload", files=files, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303, r.text
    behind_tls_proxy = own.replace("http://", "https://")  # the page is https, we see http
    files = {"metadata": ("entry.xml", sign(draft_entry(image), me, ago=250), "application/xml")}
    r = http.post("/upload", files=files, headers={"Origin": behind_tls_proxy})
    assert r.status_code == 303, r.text
    r = http.post(
        "/metadata",
        content=sign(draft_entry(image), me, ago=200),
        headers={"Content-Type": "text/xml"},
    )
    assert r.status_code == 201, r.text
    r = http.post(
        "/metadata",
        content=sign(draft_entry(image), me, ago=100),
        headers={"Content-Type": "application/xml; charset=utf-8"},
    )
    assert r.status_code == 201, r.text
