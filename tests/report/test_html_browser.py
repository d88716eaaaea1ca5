"""The HTML report opened in a real browser (headless Chromium), from disk: its plots load and its
tables are there."""
import pytest
from selenium.webdriver.common.by import By

from dataengine.report.html import write_html
from tests.report.test_html import make_run
from tests.support.browser import chrome, screenshot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    driver = chrome(1100, 1400)
    yield driver
    driver.quit()


def test_the_report_shows_its_plots_and_tables(browser, tmp_path):
    page = write_html([make_run(tmp_path / "run")], tmp_path / "report.html")
    browser.get(page.as_uri())
    assert browser.title == "dataengine report"
    plots = browser.find_elements(By.CSS_SELECTOR, "img[alt=plot]")
    assert len(plots) == 3  # curves, ABS's shares, round 1's generated / kept / dropped
    sizes = browser.execute_script("return Array.from(document.querySelectorAll('img[alt=plot]'))"
                                   ".map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert all(ok and w > 200 and h > 100 for ok, w, h in sizes), sizes
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    for section in ("Accuracy per type per round (held-out part)", "ABS: items planned per type", "What a point cost",
                    "Examples per type", "Interactive Prompt Optimization"):
        assert section in headings, headings
    tables = browser.find_elements(By.TAG_NAME, "table")
    assert len(tables) >= 3  # accuracy, the ledger, IPO's versions
    accuracy = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in tables[0].find_elements(By.TAG_NAME, "tr")[1:]]
    assert accuracy[-1] == ["overall", "25.0%", "65.0%"]
    assert browser.find_element(By.CSS_SELECTOR, ".item img").get_attribute("naturalWidth") == "96"  # the thumbnail
    assert "<script>" not in browser.page_source.split("<body>")[1]  # the item's markup came out as text
    screenshot(browser, "report")
