"""The review page in a real browser (headless Chromium): accept one item, reject another with the
keyboard, edit a third through the page's form, decide in two tabs at once; then the database and the
next training mix. One browser and one server for the module."""
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dataengine import stages
from dataengine.config import load_config
from dataengine.loop import Loop
from dataengine.records import ImageAnnotation, Sample, read_jsonl
from dataengine.review.app import create_app
from dataengine.review.store import ReviewStore
from tests.support.browser import Server, chrome, screenshot
from tests.support.review import review_run

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return review_run(tmp_path_factory.mktemp("browser") / "run")


@pytest.fixture(scope="module")
def server(run):
    with Server(create_app(run, allowed_hosts=["127.0.0.1", "localhost"])) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    driver = chrome()
    yield driver
    driver.quit()


def card(driver, item_id):
    return driver.find_element(By.CSS_SELECTOR, f".item[data-item='{item_id}']")


def decided(driver, item_id, verdict):
    WebDriverWait(driver, 10).until(lambda d: card(d, item_id).find_element(By.CLASS_NAME, "decision").get_attribute("data-verdict") == verdict)
    return card(driver, item_id).find_element(By.CLASS_NAME, "decision").text


def test_accept_reject_and_edit_in_the_page(browser, server, run):
    kept = read_jsonl(run / "round_1" / "filtered.jsonl", Sample)
    a, b, c = kept[:3]
    browser.get(server.url + "/?round=1")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".item")) == 10
    # the pictures load, with the annotation's boxes over them
    assert browser.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert len(card(browser, a.id).find_elements(By.CSS_SELECTOR, "svg.boxes rect")) >= 1
    # accept with the button
    card(browser, a.id).find_element(By.CSS_SELECTOR, "button.accept").click()
    assert decided(browser, a.id, "accept") == "accepted"
    # reject with the keyboard: focus the item, press r
    card(browser, b.id).click()
    browser.switch_to.active_element.send_keys("r")
    assert decided(browser, b.id, "reject") == "rejected"
    # edit the question through the form (opened with e), and save
    card(browser, c.id).click()
    browser.switch_to.active_element.send_keys("e")
    form = card(browser, c.id).find_element(By.CSS_SELECTOR, "form.editor")
    assert form.is_displayed()
    field = form.find_element(By.NAME, "instruction")
    field.clear()
    field.send_keys(c.instruction.replace("?", " in this picture?"))
    form.find_element(By.CSS_SELECTOR, "button.save").click()
    assert decided(browser, c.id, "edit") == "edited: passes the filter"
    assert not form.is_displayed()
    assert browser.find_element(By.ID, "decided").text == "3"
    screenshot(browser, "review")
    # the database has the three decisions
    got = ReviewStore(run / "review.sqlite").decisions(1)
    assert {i: d.verdict for i, d in got.items()} == {a.id: "accept", b.id: "reject", c.id: "edit"}
    assert got[c.id].edited.instruction == c.instruction.replace("?", " in this picture?") and got[c.id].check == ""
    # a reload shows them
    browser.refresh()
    assert card(browser, b.id).find_element(By.CLASS_NAME, "decision").text == "rejected"
    # and the next round's training mix: b left out, c's edit in place of c
    cfg = load_config(run / "config.yaml")
    inputs = stages.resolve_inputs(cfg, run)
    guard = stages.benchmark_guard(stages.read_questions(inputs)[0], inputs)
    items = Loop(cfg, run).incremental(1, recheck=stages.edit_check(guard, read_jsonl(inputs.pool, ImageAnnotation), cfg))
    mix = stages.training_mix(read_jsonl(inputs.original, Sample), items, cfg.train.original_fraction, seed=cfg.seed + 2)
    ids = [s.id for s in mix]
    assert b.id not in ids and a.id in ids and ids.count(c.id) == 1
    assert next(s for s in mix if s.id == c.id).instruction.endswith(" in this picture?")
    assert len(items) == len(kept) - 1


def test_two_tabs_lose_no_decision(browser, server, run):
    kept = read_jsonl(run / "round_1" / "filtered.jsonl", Sample)
    x, y = kept[3], kept[4]
    browser.get(server.url + "/?round=1")
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(server.url + "/?round=1")
    card(browser, y.id).find_element(By.CSS_SELECTOR, "button.reject").click()  # tab 2
    decided(browser, y.id, "reject")
    browser.close()
    browser.switch_to.window(first)
    card(browser, x.id).find_element(By.CSS_SELECTOR, "button.accept").click()  # tab 1, loaded before tab 2 decided
    decided(browser, x.id, "accept")
    got = ReviewStore(run / "review.sqlite").decisions(1)
    assert got[x.id].verdict == "accept" and got[y.id].verdict == "reject"


def test_ipo_review_and_bad_input_in_the_browser(browser, server, run):
    items = read_jsonl(run / "ipo" / "v1" / "items.jsonl", Sample)
    browser.get(server.url + "/ipo")
    one = card(browser, items[1].id)
    one.find_element(By.NAME, "comment").send_keys("the answer is not in the picture")
    one.find_element(By.CSS_SELECTOR, "select[name=kind] option[value='wrong answer']").click()
    one.find_element(By.CSS_SELECTOR, "button.fail").click()
    assert decided(browser, items[1].id, "fail") == "fail (wrong answer): the answer is not in the picture"
    card(browser, items[0].id).click()
    browser.switch_to.active_element.send_keys("p")
    decided(browser, items[0].id, "pass")
    got = ReviewStore(run / "review.sqlite").decisions("ipo-v1")
    assert got[items[0].id].verdict == "pass" and got[items[1].id].kind == "wrong answer"
    screenshot(browser, "review-ipo")
    for url, text in [("/?round=9", "round 9: not in"), ("/item/1/nothing", "item nothing: not in round 1"), ("/image/..%2F..%2Fconfig.yaml", "not a picture of this run")]:
        browser.get(server.url + url)
        assert text in browser.find_element(By.ID, "error").text
        assert "Traceback" not in browser.page_source


def test_a_missing_browser_fails_and_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium chromium-driver"):
        chrome()


def test_an_evolved_child_is_reviewed_in_the_page(browser, tmp_path):
    """A child the training mix uses, rejected with the keyboard, leaves the mix; another is edited."""
    from dataengine.evolve.rounds import evolve
    run = review_run(tmp_path / "run", per_type=3)
    pool = read_jsonl(run / "world" / "pool.jsonl", ImageAnnotation)
    evolve(read_jsonl(run / "round_1" / "filtered.jsonl", Sample), pool, run / "round_1" / "evolve", rounds=2,
           vocab=stages.vocabulary(pool))
    with Server(create_app(run, allowed_hosts=["127.0.0.1", "localhost"])) as srv:
        browser.get(srv.url + "/?round=1&status=evolved")
        used = [c for c in browser.find_elements(By.CSS_SELECTOR, ".item") if c.find_elements(By.CSS_SELECTOR, ".training")]
        a, b = (c.get_attribute("data-item") for c in used[:2])
        assert card(browser, a).find_element(By.CSS_SELECTOR, "dl.lineage .operator").text
        card(browser, a).find_element(By.CSS_SELECTOR, '.pic').click()  # not the parent's link
        browser.switch_to.active_element.send_keys("r")
        assert decided(browser, a, "reject") == "rejected"
        card(browser, b).find_element(By.CSS_SELECTOR, '.pic').click()
        browser.switch_to.active_element.send_keys("e")
        form = card(browser, b).find_element(By.CSS_SELECTOR, "form.editor")
        field = form.find_element(By.NAME, "answer")
        answer = field.get_attribute("value")
        field.clear()
        field.send_keys("As the picture shows: " + answer)
        form.find_element(By.CSS_SELECTOR, "button.save").click()
        assert decided(browser, b, "edit") == "edited: passes the filter"
        browser.refresh()
        assert card(browser, a).find_elements(By.CSS_SELECTOR, ".not-training")
        assert card(browser, b).find_elements(By.CSS_SELECTOR, ".training")
