"""The built documentation site in headless Chromium: the index and a method page render with their title,
the navigation and a code block (the page is laid out by the theme, not raw markdown)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

from tests.conftest import REPO

from .site import build_site

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "no headless browser here (apt-get install chromium chromium-driver; .ci/run installs them)",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[test]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def site_url(tmp_path_factory):
    """The site built from this checkout, served on a free local port."""
    out = tmp_path_factory.mktemp("site")
    r = build_site(REPO, out)
    assert r.returncode == 0, r.stderr[-3000:]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _open(browser, url: str):
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _nav_titles(browser) -> set[str]:
    links = browser.find_elements(
        By.CSS_SELECTOR, "nav.md-nav--primary a.md-nav__link, nav.md-nav--primary label"
    )
    return {a.get_attribute("textContent").strip() for a in links}


@pytest.mark.parametrize(
    "page, title, heading",
    [("index.html", "distill", "distill"), ("docs/methods/vild.html", "ViLD", "ViLD: ViLD-text, ViLD and")],
)
def test_page_renders(browser, site_url, page, title, heading):
    _open(browser, site_url + page)
    assert title in browser.title and "distill" in browser.title
    h1 = browser.find_element(By.CSS_SELECTOR, "article h1")
    assert h1.is_displayed() and h1.text.startswith(heading)
    nav = _nav_titles(browser)
    for entry in (
        "Install",
        "Getting started",
        "Methods",
        "Benchmarks",
        "Model zoo",
        "API reference",
        "Changelog",
    ):
        assert entry in nav, (entry, sorted(nav))
    code = browser.find_elements(By.CSS_SELECTOR, "article div.highlight pre code")
    assert code and code[0].is_displayed() and code[0].text.strip()
    # the theme's stylesheet and script applied (unstyled, the header is a page-high logo and nothing is sticky)
    header = browser.find_element(By.CSS_SELECTOR, "header.md-header")
    assert header.value_of_css_property("position") == "sticky"
    assert 20 < header.size["height"] < 100
    assert browser.execute_script("return typeof document$ !== 'undefined'"), (
        "the theme's javascript did not load"
    )
