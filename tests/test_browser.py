"""The web catalogue in real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from imagekit.image.identifier import sha1_to_id

pytestmark = pytest.mark.timeout(300)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


def publish(marketplace, data: bytes) -> str:
    r = httpx.post(
        marketplace.url + "/metadata", content=data, headers={"Content-Type": "application/xml"}
    )
    assert r.status_code == 201, r.text
    return r.headers["Location"]


def test_list_filter_and_search(page, marketplace, make_endorser, make_signed):
    me = make_endorser()
    publish(marketplace, make_signed(me, ago=60, title="Browser Debian", os_name="debian"))
    publish(
        marketplace, make_signed(me, ago=60, title="Browser Alpine", os_name="alpine", kind="disk")
    )
    publish(
        marketplace,
        make_signed(me, ago=60, title="Browser Old", os_name="debian", deprecated="superseded"),
    )
    page.goto(marketplace.url + "/")
    page.select_option("select[name=email]", me.email)
    page.click("button[type=submit]")
    assert page.locator("tr.entry").count() == 3
    page.fill("input[name=os]", "debian")
    page.select_option("select[name=status]", "valid")
    page.click("button[type=submit]")
    assert page.locator("a.entry-link").all_inner_texts() == ["Browser Debian"]
    page.fill("input[name=os]", "")
    page.select_option("select[name=status]", "")
    page.select_option("select[name=kind]", "disk")
    page.click("button[type=submit]")
    assert page.locator("a.entry-link").all_inner_texts() == ["Browser Alpine"]
    page.select_option("select[name=kind]", "")
    page.fill("input[name=q]", "old")
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**q=old**")
    assert page.locator("a.entry-link").all_inner_texts() == ["Browser Old"]
    assert "deprecated" in page.locator("tr.entry").inner_text()


def test_open_an_entry_download_xml_and_json(
    page, marketplace, make_endorser, make_signed, tmp_path
):
    me = make_endorser()
    data = make_signed(me, ago=60, title="Downloadable", tag="dl")
    publish(marketplace, data)
    page.goto(f"{marketplace.url}/browse?email={me.email}")
    page.click("text=Downloadable")
    assert page.locator("h1.entry-title").inner_text() == "Downloadable"
    assert page.locator("table.entries tr.entry").count() == 1  # history
    with page.expect_download() as info:
        page.click("#download-xml")
    target = tmp_path / "entry.xml"
    info.value.save_as(target)
    assert target.read_bytes() == data
    page.click("#download-json")
    assert '"alternative": "dl"' in page.locator("body").inner_text()
    page.go_back()
    page.click("a.endorser-link")
    assert page.locator("h1.endorser").inner_text() == me.email
    assert page.locator("a.entry-link").all_inner_texts() == ["Downloadable"]


def test_upload_through_the_form(page, marketplace, make_endorser, make_signed, tmp_path):
    me = make_endorser()
    entry = tmp_path / "mine.xml"
    entry.write_bytes(make_signed(me, ago=60, title="Uploaded by form"))
    page.goto(marketplace.url + "/upload")
    page.set_input_files("input[name=metadata]", str(entry))
    page.click("button[type=submit]")
    assert page.locator("h1.entry-title").inner_text() == "Uploaded by form"
    assert me.email in page.locator("a.endorser-link").inner_text()
    # the same file again: refused, with the reason on an error page
    page.goto(marketplace.url + "/upload")
    page.set_input_files("input[name=metadata]", str(entry))
    page.click("button[type=submit]")
    assert "append-only" in page.locator("p.error").inner_text()


def test_markup_in_an_entry_is_shown_as_text(page, marketplace, make_endorser, make_signed):
    me = make_endorser()
    title = "<script>window.__pwned = 1</script><b>bold</b>"
    location = publish(
        marketplace,
        make_signed(me, ago=60, title=title, description="<img src=x onerror='window.__pwned=2'>"),
    )
    page.goto(f"{marketplace.url}/browse?email={me.email}")
    assert page.locator("a.entry-link").inner_text() == title
    page.goto(marketplace.url + location + "?media=html")
    assert page.locator("h1.entry-title").inner_text() == title
    assert page.locator("dd.description").inner_text().startswith("<img")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("h1.entry-title b").count() == 0


@pytest.fixture
def other_site():
    """Another origin (a different loopback port) serving the pages a test gives it."""
    import http.server
    import threading

    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pages
    server.shutdown()
    server.server_close()


def test_another_site_cannot_push_entries_through_the_visitor(
    page, marketplace, other_site, make_endorser, make_signed
):
    """A page elsewhere makes the visitor's browser post a signed entry to the (intranet)
    registry: as text/plain, as an untyped Blob, as a form. None may be stored."""
    import json

    me = make_endorser()
    entries = [make_signed(me, ago=300 - 60 * i).decode() for i in range(3)]
    origin, pages = other_site
    target = marketplace.url + "/metadata"
    pages["/evil.html"] = f"""<!doctype html><html><body>
<form id="f" method="post" action="{target}" enctype="multipart/form-data" target="sink">
<textarea name="metadata"></textarea></form><iframe name="sink"></iframe>
<script>
const entries = {json.dumps(entries)};
window.done = Promise.allSettled([
  fetch("{target}", {{method: "POST", mode: "no-cors", body: entries[0]}}),
  fetch("{target}", {{method: "POST", mode: "no-cors", body: new Blob([entries[1]])}}),
]).then(() => {{
  document.querySelector("textarea").value = entries[2];
  document.getElementById("f").submit();
  return new Promise(r => document.querySelector("iframe").onload = () => r("posted"));
}});
</script></body></html>""".encode()
    page.goto(origin + "/evil.html")
    assert page.evaluate("window.done") == "posted"
    stored = httpx.get(marketplace.url + "/api/entries", params={"email": me.email}).json()
    assert stored["entries"] == []


def test_pages_keep_their_style_under_the_content_security_policy(page, marketplace):
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    for path in ("/browse", "/upload", "/endorsers?media=html"):
        page.goto(marketplace.url + path)
        # style.css sets the header's layout; a blocked <style> leaves the browser default
        assert (
            page.evaluate("getComputedStyle(document.querySelector('header')).display") != "block"
        )
    assert violations == []


# --- how to use an entry: launch command, signature, sizes, dates, phone width ----------

# Screenshots of the catalogue, an entry page and the upload form, kept as test artifacts:
# $IMAGEKIT_TEST_ARTIFACTS/browser (CI sets it to a directory it keeps), else
# build/test-artifacts/browser in the source tree (git ignores build/).
ARTIFACTS = (
    Path(
        os.environ.get("IMAGEKIT_TEST_ARTIFACTS")
        or Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
    )
    / "browser"
)
PHONE = {"width": 375, "height": 740}


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def fits_width(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.fixture
def rich_entry(marketplace, make_endorser, make_signed):
    """A published entry with a tag, a known size and validity, and an older one it
    replaces; returns (endorser, entry page URL, image bytes, the replaced entry's ID)."""
    me = make_endorser()
    old_image = os.urandom(2048)
    image = os.urandom(3 << 19)  # 1.5 MiB
    new_id = sha1_to_id(hashlib.sha1(image).hexdigest())
    publish(
        marketplace,
        make_signed(me, ago=7200, image=old_image, title="Web base v1", is_replaced_by=new_id),
    )
    old_id = sha1_to_id(hashlib.sha1(old_image).hexdigest())
    valid = datetime.now(UTC).replace(microsecond=0) + timedelta(days=29, hours=1)
    location = publish(
        marketplace,
        make_signed(
            me,
            ago=90,
            image=image,
            title="Web base v2",
            tag="web-base",
            valid=valid,
            description="A web server appliance",
            replaces=old_id,
        ),
    )
    return me, f"{marketplace.url}{location}?media=html", image, old_id


def test_entry_page_shows_how_to_launch_it_with_a_copy_button(browser, rich_entry):
    from playwright.sync_api import expect

    me, url, image, _ = rich_entry
    ident = sha1_to_id(hashlib.sha1(image).hexdigest())
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(20_000)
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(url)
    base = url.split("/metadata/")[0]
    command = f"imagekit launch {ident} --marketplace {base}"
    assert page.locator("#launch-command").inner_text().strip() == command
    assert page.locator("code.launch-tag").inner_text() == f"imagekit launch {me.email}:web-base"
    button = page.locator("button.copy")
    assert button.is_visible()
    button.click()
    expect(button).to_have_text("Copied")  # once the clipboard took it
    assert page.evaluate("navigator.clipboard.readText()") == command
    # the script is a file: nothing inline for the page's CSP (script-src 'self') to block
    assert page.evaluate("[...document.scripts].every(s => s.src && !s.textContent.trim())")
    assert page.evaluate("[...document.scripts].map(s => new URL(s.src).pathname)") == [
        "/static/site.js"
    ]
    assert violations == []
    shot(page, "entry-page")
    context.close()


def test_without_javascript_the_command_is_there_and_no_dead_button(browser, rich_entry):
    _, url, _, _ = rich_entry
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(url)
    assert page.locator("#launch-command").inner_text().startswith("imagekit launch ")
    assert not page.locator("button.copy").is_visible()
    page.goto(url.split("/metadata/")[0] + "/browse")
    assert page.locator("tr.entry").count() >= 1  # the catalogue needs no script either
    context.close()


def test_entry_page_says_who_signed_it_and_how(page, rich_entry):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from imagekit.signing.certs import dn_string

    me, url, _, _ = rich_entry
    cert = x509.load_pem_x509_certificate(me.cert_path.read_bytes())
    page.goto(url)
    assert page.locator("dd.sig-algorithm").inner_text() == "ECDSA-SHA256"
    assert page.locator("dd.sig-subject").inner_text() == dn_string(cert.subject)
    assert page.locator("dd.sig-issuer").inner_text() == dn_string(cert.issuer)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex().upper()
    shown = page.locator("code.sig-fingerprint").inner_text()
    assert shown.replace(":", "") == fingerprint and shown.count(":") == 31
    validity = page.locator("dd.sig-validity")
    times = validity.locator("time")
    assert times.nth(0).get_attribute("datetime") == cert.not_valid_before_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert times.nth(1).get_attribute("datetime") == cert.not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert validity.inner_text().startswith("from 2 days ago until in ")


def test_sizes_and_dates_read_as_people_say_them_exact_on_hover(page, rich_entry):
    _, url, image, _ = rich_entry
    page.goto(url)
    size = page.locator("dl.terms span.size").first
    assert size.inner_text() == "1.5 MiB"
    assert size.get_attribute("title") == f"{len(image):,} bytes"
    endorsed = page.locator("dl.terms time.endorsed")
    assert endorsed.inner_text() == "1 minute ago"
    assert endorsed.get_attribute("title").endswith("Z")
    expires = page.locator("dl.terms time.expires")
    assert expires.inner_text() == "in 4 weeks"
    endorsed.hover()  # the exact value is the element's title: the browser's tooltip
    assert endorsed.get_attribute("title") == endorsed.get_attribute("datetime")


def test_replaces_and_is_replaced_by_link_the_two_images(page, rich_entry):
    _, url, image, old_id = rich_entry
    page.goto(url)
    page.click("a.replaces")
    assert page.locator("a.entry-link").all_inner_texts() == ["Web base v1"]
    assert f"identifier={old_id}" in page.url
    page.click("a.entry-link")  # the old entry's page points forward
    page.click("a.replaced-by")
    assert page.locator("a.entry-link").all_inner_texts() == ["Web base v2"]
    assert f"identifier={sha1_to_id(hashlib.sha1(image).hexdigest())}" in page.url


def test_catalogue_rows_carry_size_description_and_expiry(page, marketplace, rich_entry):
    me, _, _, _ = rich_entry
    page.goto(f"{marketplace.url}/browse?email={me.email}")
    row = page.locator("tr.entry", has_text="Web base v2")
    assert row.locator("td[data-label=Size] .size").inner_text() == "1.5 MiB"
    assert row.locator(".summary").inner_text() == "A web server appliance"
    assert row.locator("td[data-label=Expires] time").inner_text() == "in 4 weeks"
    headers = page.locator("table.entries th").all_inner_texts()
    assert headers == [
        "Title",
        "Identifier",
        "Endorser",
        "OS",
        "Arch",
        "Kind",
        "Size",
        "Endorsed",
        "Expires",
        "Status",
    ]
    shot(page, "catalogue")


def test_pages_fit_a_phone_and_long_digests_wrap(browser, marketplace, rich_entry):
    _, url, _, _ = rich_entry
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    page = context.new_page()
    page.goto(url)
    assert fits_width(page), "the entry page scrolls sideways at a phone's width"
    digest = page.locator("dd.checksums code.digest").last  # SHA-256, 64 hex digits
    box = digest.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    assert box["height"] > 20  # it wrapped onto more than one line
    shot(page, "entry-page-phone")
    page.goto(marketplace.url + "/browse")
    assert fits_width(page), "the catalogue scrolls sideways at a phone's width"
    assert not page.locator("table.entries thead").is_visible()  # one card per entry
    shot(page, "catalogue-phone")
    page.goto(marketplace.url + "/upload")
    assert fits_width(page)
    context.close()


def test_upload_form_screenshot(page, marketplace):
    page.goto(marketplace.url + "/upload")
    assert page.locator("input[name=metadata]").is_visible()
    shot(page, "upload-form")
