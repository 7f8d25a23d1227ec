"""The web catalogue in real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.timeout(300)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


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
    r = httpx.post(marketplace.url + "/metadata", content=data,
                   headers={"Content-Type": "application/xml"})
    assert r.status_code == 201, r.text
    return r.headers["Location"]


def test_list_filter_and_search(page, marketplace, make_endorser, make_signed):
    me = make_endorser()
    publish(marketplace, make_signed(me, ago=60, title="Browser Debian", os_name="debian"))
    publish(marketplace, make_signed(me, ago=60, title="Browser Alpine", os_name="alpine",
                                     kind="disk"))
    publish(marketplace, make_signed(me, ago=60, title="Browser Old", os_name="debian",
                                     deprecated="superseded"))
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


def test_open_an_entry_download_xml_and_json(page, marketplace, make_endorser, make_signed,
                                            tmp_path):
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
    location = publish(marketplace, make_signed(
        me, ago=60, title=title, description="<img src=x onerror='window.__pwned=2'>"))
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


def test_another_site_cannot_push_entries_through_the_visitor(page, marketplace, other_site,
                                                              make_endorser, make_signed):
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
    page.on("console", lambda m: violations.append(m.text)
            if "Content Security Policy" in m.text else None)
    for path in ("/browse", "/upload", "/endorsers?media=html"):
        page.goto(marketplace.url + path)
        # style.css sets the header's layout; a blocked <style> leaves the browser default
        assert page.evaluate(
            "getComputedStyle(document.querySelector('header')).display") != "block"
    assert violations == []
