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
