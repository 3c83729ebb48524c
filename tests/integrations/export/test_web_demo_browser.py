"""The web demo driven by headless Chromium: upload a synthetic image, type a vocabulary, read the results.

Set DISTILL_DEMO_SCREENSHOT=path.png to keep the screenshot of the page (tools/web_demo.png was taken so)."""

from __future__ import annotations

import os
import shutil
import socket

import cv2
import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "no headless browser here (apt-get install chromium chromium-driver; .ci/run installs them)",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[test]')")
pytest.importorskip("gradio", reason="gradio not installed (pip install -e '.[demo]')")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.conftest import REPO  # noqa: E402

VOCABULARY = ["circle", "square", "star"]
WAIT = 240  # seconds: the first request loads the teacher and the model on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(detector_checkpoint, segmenter_checkpoint, detector_opts):
    from distill.config import load_config
    from distill.integrations.torchvision.sem_seg import load_semseg_config
    from distill.integrations.web_demo import DemoModels, build_app, launch

    det_cfg = load_config(str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml"), detector_opts)
    seg_cfg, seg_weights = segmenter_checkpoint
    app = build_app(DemoModels(det_cfg, detector_checkpoint[1], load_semseg_config(), seg_weights))
    port = _free_port()
    launch(app, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


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


def _not_blank(element) -> float:
    """Pixel standard deviation of an element's screenshot."""
    img = cv2.imdecode(np.frombuffer(element.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
    return float(img.std())


def _type(driver, css: str, text: str) -> None:
    box = driver.find_element(By.CSS_SELECTOR, css)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)
    box.send_keys(Keys.TAB)


def _upload(driver, prefix: str, path: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{prefix}-image input[type=file]").send_keys(path)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{prefix}-image img"))


def test_detection_and_segmentation_tabs(demo_url, browser, synthetic_root, tmp_path):
    image = str(synthetic_root / "images/val/000001.png")
    browser.get(demo_url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "det-run"))
    _upload(browser, "det", image)
    _type(browser, "#det-vocab textarea", ", ".join(VOCABULARY))
    _type(browser, "#det-thresh input[type=number]", "0.02")
    browser.find_element(By.ID, "det-run").click()
    WebDriverWait(browser, WAIT).until(
        lambda d: any(n in d.find_element(By.ID, "det-table").text for n in VOCABULARY)
    )
    result = WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#det-result img"))[
        0
    ]
    assert _not_blank(result) > 10
    rows = browser.find_element(By.ID, "det-table").text
    assert "hexagon" not in rows  # a synthetic class outside the typed vocabulary
    assert "detection(s) with score >= 0.02" in browser.find_element(By.ID, "det-status").text
    browser.save_screenshot(os.environ.get("DISTILL_DEMO_SCREENSHOT") or str(tmp_path / "web_demo.png"))

    _type(browser, "#det-thresh input[type=number]", "1")  # nothing scores 1: the page must say so
    browser.find_element(By.ID, "det-run").click()
    WebDriverWait(browser, WAIT).until(
        lambda d: (
            "no detection above the threshold 1 for the vocabulary circle, square, star"
            in d.find_element(By.ID, "det-status").text
        )
    )

    browser.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Semantic segmentation')]").click()
    _upload(browser, "seg", image)
    _type(browser, "#seg-vocab textarea", ", ".join(VOCABULARY))
    browser.find_element(By.ID, "seg-run").click()
    WebDriverWait(browser, WAIT).until(
        lambda d: (
            "background" in d.find_element(By.ID, "seg-table").text
            or any(n in d.find_element(By.ID, "seg-table").text for n in VOCABULARY)
        )
    )
    seg = browser.find_elements(By.CSS_SELECTOR, "#seg-result img")[0]
    assert _not_blank(seg) > 10
    legend = WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#seg-legend img"))[
        0
    ]
    assert _not_blank(legend) > 10
    for button in browser.find_elements(By.CSS_SELECTOR, "#seg-result button, #seg-legend button"):
        toolbar = button.is_displayed() and not button.find_elements(
            By.TAG_NAME, "img"
        )  # not the image's own
        if toolbar:  # the picture's toolbar (download, fullscreen, ...) must not hide the legend
            assert not _overlap(button.rect, legend.rect), (button.rect, legend.rect)


def _overlap(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )
