"""The web page (/ui/) in a real headless Chromium, against a running worker.

Needs Debian's chromium and chromium-driver (`make test` installs them when missing:
scripts/ensure-chromium). Set CHOREO_UPDATE_SCREENSHOT=1 to write docs/ui.png.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import uuid
from pathlib import Path

import pytest

from choreo.graph_svg import build_graph
from choreo.kafka_io import send_all, send_events
from choreo.samples import CARD_DECLINED, checkout, order
from tests.integration.conftest import REPO, Worker, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="no /usr/bin/chromium and chromedriver (scripts/ensure-chromium installs them)")


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path: Selenium Manager not used
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1700", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def not_blank(png: bytes, rect: dict, min_colours: int = 4, min_ink: float = 0.03) -> dict:
    """Distinct colours and the share of pixels differing from the background in `rect`."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    box = (int(rect["x"]), int(rect["y"]), int(rect["x"] + rect["width"]),
           int(rect["y"] + rect["height"]))
    crop = image.crop(box)
    flat = getattr(crop, "get_flattened_data", None) or crop.getdata  # Pillow 14 drops getdata
    pixels = list(flat())
    background = max(set(pixels[:5000]), key=pixels[:5000].count)
    ink = sum(1 for p in pixels if p != background) / max(1, len(pixels))
    colours = len(set(pixels))
    assert crop.width > 100 and crop.height > 50, box
    assert colours >= min_colours, (box, colours)
    assert ink >= min_ink, (box, ink)
    return {"colours": colours, "ink": round(ink, 3)}


def test_the_page_draws_the_graph_a_flow_and_the_dead_letters(make_worker, browser,
                                                               tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    worker: Worker = make_worker()  # the bundled file: 10-minute steps stay in flight
    topics = worker.choreography.topics
    order_id = f"ord-1004-{uuid.uuid4().hex[:6]}"
    asyncio.run(send_events(worker.broker.bootstrap, topics.events_topic, [
        order(order_id, [("SKU-HEADPHONES", 1)], 129.0, card=CARD_DECLINED),
        checkout(f"cart-{uuid.uuid4().hex[:6]}")]))
    asyncio.run(send_all(worker.broker.bootstrap, topics.events_topic,
                         [(b"junk", b"{not json")]))
    wait_until(lambda: any(e["event_type"] == "customer_flagged"
                           and e["metadata"].get("correlation_id") == order_id
                           for e in worker.events()), timeout=60)
    wait = WebDriverWait(browser, 30)

    browser.get(worker.url + "/ui/")
    expected = build_graph(worker.choreography)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.choreo-graph g.node"))
               == len(expected.nodes))
    edges = browser.find_elements(By.CSS_SELECTOR, "svg.choreo-graph path.edge")
    assert len(edges) == len(expected.edges) > 30
    # Live counts: three declined payments retried (refreshed every 3 s).
    retry = "svg.choreo-graph g.node[data-id='pattern:payment-failed-retry']"
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, retry).get_attribute("data-count")
               == "3")
    assert browser.find_element(
        By.CSS_SELECTOR, "g.node[data-id='action:flag_customer@fraud_detection']"
    ).get_attribute("data-count") == "1"

    browser.find_element(By.ID, "cid").send_keys(order_id)
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline .row")) >= 15)
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline .row")
    labels = [r.find_element(By.CSS_SELECTOR, ".what").text for r in rows]
    assert labels[0] == "order_received"
    for label in ("→ check_inventory @inventory_management", "payment_failed",
                  "→ cancel_order @order_management", "→ flag_customer @fraud_detection",
                  "customer_flagged"):
        assert label in labels, labels
    # Every row but the first has its cause on the page, drawn as a link.
    links = browser.find_elements(By.CSS_SELECTOR, "#timeline svg.links path.link")
    assert len(links) == len(rows) - 1
    ids = {r.get_attribute("data-id"): i for i, r in enumerate(rows)}
    for row in rows[1:]:
        assert ids[row.get_attribute("data-cause")] < ids[row.get_attribute("data-id")]
    assert "action.started" not in labels  # shown on request only
    partial = browser.find_element(By.CSS_SELECTOR, ".partial[data-pattern='order-to-shipment']")
    assert "waiting for: payment_successful, shipping_complete" in partial.text
    assert "deadline" in partial.text

    wait.until(lambda d: "not_json" in d.find_element(By.ID, "dlq").text)

    png = browser.get_screenshot_as_png()
    (tmp_path / "ui.png").write_bytes(png)
    graph = not_blank(png, browser.find_element(By.CSS_SELECTOR, "svg.choreo-graph").rect,
                      min_colours=6, min_ink=0.08)
    timeline = not_blank(png, browser.find_element(By.ID, "timeline").rect)
    print(f"\nscreenshot: graph {graph}, timeline {timeline}")
    if os.environ.get("CHOREO_UPDATE_SCREENSHOT"):
        shutil.copy(tmp_path / "ui.png", REPO / "docs" / "ui.png")
