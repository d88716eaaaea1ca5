"""Evolved children in the review page: listed with their lineage and whether the round's training
mix uses them, filtered by operator and format; a decision on one takes effect in the loop's mix."""
import html
import io
import re

import pytest
from rich.console import Console
from starlette.testclient import TestClient

from dataengine import stages
from dataengine.config import load_config
from dataengine.evolve.rounds import evolve
from dataengine.loop import Loop
from dataengine.records import ImageAnnotation, Sample, read_jsonl
from dataengine.review.app import create_app
from tests.support.review import review_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The review run, its round 1 kept items evolved for two rounds into round_1/evolve as the loop does."""
    run = review_run(tmp_path_factory.mktemp("review-evolved") / "run", per_type=3)
    pool = read_jsonl(run / "world" / "pool.jsonl", ImageAnnotation)
    evolve(read_jsonl(run / "round_1" / "filtered.jsonl", Sample), pool, run / "round_1" / "evolve", rounds=2,
           vocab=stages.vocabulary(pool))
    return run


@pytest.fixture
def client(run):
    for suffix in ("", "-wal", "-shm"):
        (run / f"review.sqlite{suffix}").unlink(missing_ok=True)
    return TestClient(create_app(run), raise_server_exceptions=False)


def children(run) -> list[Sample]:
    return read_jsonl(run / "round_1" / "evolve" / "evolved.jsonl", Sample)


def mix(run) -> list[Sample]:
    """Round 1's items as its training would take them (`Loop.incremental`, with the run's recheck)."""
    cfg = load_config(run / "config.yaml")
    inputs = stages.resolve_inputs(cfg, run)
    guard = stages.benchmark_guard(stages.read_questions(inputs)[0], inputs)
    recheck = stages.edit_check(guard, read_jsonl(inputs.pool, ImageAnnotation), cfg)
    return Loop(cfg, run, console=Console(file=io.StringIO())).incremental(1, all_rounds=False, recheck=recheck)


def cards(page: str) -> dict[str, str]:
    """Item id -> its card's HTML."""
    return {m.group(1): m.group(0) for m in re.finditer(r"data-item='([^']+)'>.*?class='decision'.*?</div>", page, re.S)}


def test_evolved_children_are_listed_with_their_lineage_and_training_mark(client, run):
    kids = children(run)
    assert 2 <= len(kids) <= 20  # one page
    page = client.get("/", params={"status": "evolved"}).text
    shown = cards(page)
    assert set(shown) == {c.id for c in kids}
    used = {s.id for s in mix(run) if s.lineage}
    assert used and used < set(shown)  # evolve.share of the items: some children, not all
    assert {i for i, card in shown.items() if "in the training mix" in card and "not in the training mix" not in card} == used
    assert "evolved" in client.get("/").text and f"{len(kids)} evolved" in client.get("/").text
    # filterable by operator and format
    for op in {c.lineage.operator for c in kids}:
        page = client.get("/", params={"status": "evolved", "operator": op}).text
        assert set(cards(page)) == {c.id for c in kids if c.lineage.operator == op}
    form = next(c.lineage.format for c in kids if c.lineage.format != "multiple choice")
    assert set(cards(client.get("/", params={"format": form}).text)) == {c.id for c in kids if c.lineage.format == form}
    # the item's page: parent question, operator, format, steps, the judge's verdict and reason
    by_id = {s.id: s for s in read_jsonl(run / "round_1" / "generated.jsonl", Sample) + kids}
    c = next(c for c in kids if c.lineage.round == 2 and c.lineage.steps)
    page = html.unescape(client.get(f"/item/1/{c.id}").text)
    assert by_id[c.lineage.parent].instruction in page and f"/item/1/{c.lineage.parent}" in page
    for text in (c.lineage.operator, c.lineage.format, *c.lineage.steps, c.lineage.verdict.judge, c.lineage.verdict.reason):
        assert text in page, text


def wrong_answer(s: Sample) -> dict:
    other = next(i for i in range(4) if "ABCD"[i] != s.choice_answer)
    return {"short_answer": s.options[other], "answer": f"It is {s.options[other]}.", "choice_answer": "ABCD"[other]}


def test_decisions_on_children_take_effect_in_the_mix(client, run):
    kids, before = children(run), mix(run)
    used = [s for s in before if s.lineage]
    a, b, c = used[:3]  # evolve.share (0.25) of 12 items
    # rejected: the child leaves the mix; its item gets another descendant, or stays as it is
    assert client.post("/api/decide", json={"round": "1", "item": a.id, "verdict": "reject"}).status_code == 200
    # edited, passing: the edit trains in the child's place
    r = client.post("/api/decide", json={"round": "1", "item": b.id, "verdict": "edit",
                                         "edited": {"answer": "As the picture shows: " + b.answer}}).json()
    assert r["check"] == "", r
    # edited, failing (the evolution grammar reads it against the annotation): left out
    r = client.post("/api/decide", json={"round": "1", "item": c.id, "verdict": "edit", "edited": wrong_answer(c)}).json()
    assert r["check"] and "fails the filter" in r["text"], r
    after = mix(run)
    ids = [s.id for s in after]
    assert len(after) == len(before) and a.id not in ids and c.id not in ids
    assert next(s for s in after if s.id == b.id).answer.startswith("As the picture shows: ")
    for gone in (a, c):
        i = [s.id for s in before].index(gone.id)
        family = [k.id for k in kids if k.lineage.root == gone.lineage.root and k.id not in (a.id, c.id)]
        assert after[i].id in family or after[i].id == gone.lineage.root  # another descendant, or the item itself
    # no other item's pick moves
    touched = {a.lineage.root, c.lineage.root}
    assert all(x.id == y.id for x, y in zip(before, after) if (x.lineage.root if x.lineage else x.id) not in touched)
    # and the page says so
    card = cards(client.get("/", params={"status": "evolved"}).text)[a.id]
    assert "not in the training mix" in card and "rejected" in card
