"""The review app through Starlette's test client: pages, filters, decisions, bad input; and the
decisions taking effect in the loop's next training mix, `mix --review` and `export --review`."""
import json

import pytest
from rich.console import Console
from starlette.testclient import TestClient
from typer.testing import CliRunner

from dataengine import stages
from dataengine.cli import app as cli
from dataengine.config import load_config
from dataengine.errors import DataError
from dataengine.loop import Loop
from dataengine.records import ImageAnnotation, Sample, read_jsonl
from dataengine.review.app import create_app
from dataengine.review.store import ReviewStore
from tests.support.review import review_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return review_run(tmp_path_factory.mktemp("review") / "run")


@pytest.fixture
def client(run):
    (run / "review.sqlite").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        (run / f"review.sqlite{suffix}").unlink(missing_ok=True)
    return TestClient(create_app(run), raise_server_exceptions=False)


def kept(run):
    return read_jsonl(run / "round_1" / "filtered.jsonl", Sample)


def wrong_answer(s: Sample) -> dict:
    """The same item with another option marked right: well formed, but the annotation contradicts it."""
    other = next(i for i in range(4) if "ABCD"[i] != s.choice_answer)
    return {"short_answer": s.options[other], "answer": f"It is {s.options[other]}.", "choice_answer": "ABCD"[other]}


def test_the_page_lists_items_with_boxes_and_filters(client, run):
    page = client.get("/").text
    assert page.count("class='item'") == 10
    assert "<svg class='boxes'" in page and "data-boxes='0'" not in page.split("class='item'")[1]
    assert "options not distinct" in page and "question leaks the answer" in page
    rejected = client.get("/", params={"round": 1, "status": "rejected"}).text
    assert rejected.count("class='item'") == 2
    assert client.get("/", params={"type": 9}).text.count("class='item'") == 2
    assert client.get("/", params={"reason": "options not distinct"}).text.count("class='item'") == 1
    assert client.get("/", params={"version": "grounded"}).text.count("class='item'") == 10
    assert "No item matches" in client.get("/", params={"version": "v7"}).text


def test_decisions_are_recorded_and_edits_rechecked(client, run):
    a, b, c = kept(run)[:3]
    assert client.post("/api/decide", json={"round": "1", "item": a.id, "verdict": "accept"}).json()["text"] == "accepted"
    assert client.post("/api/decide", json={"round": "1", "item": b.id, "verdict": "reject"}).status_code == 200
    good = {"instruction": c.instruction.replace("?", " here?"), "answer": c.answer}
    r = client.post("/api/decide", json={"round": "1", "item": c.id, "verdict": "edit", "edited": good}).json()
    assert r["check"] == "" and r["text"] == "edited: passes the filter"
    got = ReviewStore(run / "review.sqlite").decisions(1)
    assert {i: d.verdict for i, d in got.items()} == {a.id: "accept", b.id: "reject", c.id: "edit"}
    assert got[c.id].edited.instruction.endswith(" here?") and got[c.id].edited.qtype == c.qtype
    # an edit the annotation contradicts is kept as a decision, marked failing
    r = client.post("/api/decide", json={"round": "1", "item": c.id, "verdict": "edit", "edited": wrong_answer(c)}).json()
    assert r["check"].startswith("contradicts annotation")
    # an edit that makes it a duplicate of another kept item fails too
    r = client.post("/api/decide", json={"round": "1", "item": c.id, "verdict": "edit",
                                          "edited": {"instruction": a.instruction}}).json()
    assert (r["check"] == "duplicate") == (a.image == c.image)
    page = client.get("/").text
    assert "edited: fails the filter" in page or "edited: passes" in page
    assert "data-verdict='reject'" in page
    one = client.get(f"/item/1/{c.id}").text  # the item's page lists its decisions, oldest first
    assert one.count("class='item'") == 1 and one.index("edited: passes the filter") < one.index("edited: fails the filter")


def test_bad_input_gets_a_page_not_a_traceback(client, run):
    for url, status, text in [("/?round=7", 404, "round 7: not in"), ("/?round=x", 400, "round &#x27;x&#x27;: not a number"),
                              ("/?status=maybe", 400, "status"), ("/?page=9", 404, "page 9"), ("/nowhere", 404, "Not Found"),
                              ("/ipo?version=5", 404, "prompt v5: no items"), ("/item/1/nothing", 404, "item nothing: not in round 1"),
                              ("/item/8/x", 404, "round 8: not in"), ("/item/one/x", 404, "round &#x27;one&#x27;: not a round number")]:
        r = client.get(url)
        assert r.status_code == status, url
        assert r.headers["content-type"].startswith("text/html") and text in r.text and "Traceback" not in r.text, url
    r = client.post("/api/decide", json={"round": "1", "item": "no-such-item", "verdict": "reject"})
    assert r.status_code == 404 and r.json() == {"error": f"item no-such-item: not in round 1 of {run}"}
    assert client.post("/api/decide", json={"round": "1", "item": kept(run)[0].id, "verdict": "pass"}).status_code == 400
    assert client.post("/api/decide", json={"round": "1", "item": kept(run)[0].id, "verdict": "edit",
                                            "edited": {"image": "../x.png"}}).json()["error"].endswith("cannot be edited: image")
    assert client.post("/api/decide", json={"round": "1", "item": kept(run)[0].id, "verdict": "edit",
                                            "edited": {"options": "red"}}).status_code == 400
    assert client.post("/api/decide", content="round=1", headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 415
    assert client.post("/api/decide", content="{", headers={"content-type": "application/json"}).status_code == 400
    assert ReviewStore(run / "review.sqlite").decisions() == {}


def test_only_pictures_under_the_image_roots_are_served(client, run):
    pic = kept(run)[0].image
    r = client.get(f"/image/{pic}")
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    (run / "secret.txt").write_text("secret")
    for path in ("/image/../../secret.txt", "/image/..%2F..%2Fsecret.txt", "/image/%2e%2e/%2e%2e/secret.txt",
                 f"/image/{run}/secret.txt", "/image//etc/passwd", "/image/pool/../../../secret.txt"):
        r = client.get(path)
        assert r.status_code == 404 and "secret" not in r.text.replace("secret.txt", ""), path


def test_not_a_run_directory(tmp_path, run):
    with pytest.raises(DataError, match="not a run directory"):
        create_app(tmp_path)
    res = CliRunner().invoke(cli, ["review", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no such run directory" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["review", str(run), "--check"])
    assert res.exit_code == 0 and "rounds 1; 1 IPO prompt versions" in res.output


def test_decisions_take_effect_in_the_next_mix_and_the_export(client, run, tmp_path):
    a, b, c, d = kept(run)[:4]
    client.post("/api/decide", json={"round": "1", "item": a.id, "verdict": "reject"})
    client.post("/api/decide", json={"round": "1", "item": b.id, "verdict": "edit",
                                     "edited": {"instruction": b.instruction.replace("?", " here?")}})
    client.post("/api/decide", json={"round": "1", "item": c.id, "verdict": "edit", "edited": wrong_answer(c)})
    client.post("/api/decide", json={"round": "1", "item": d.id, "verdict": "accept"})
    cfg = load_config(run / "config.yaml")
    inputs = stages.resolve_inputs(cfg, run)
    guard = stages.benchmark_guard(stages.read_questions(inputs)[0], inputs)
    recheck = stages.edit_check(guard, read_jsonl(inputs.pool, ImageAnnotation), cfg)
    # the loop's next round trains on round 1's items as reviewed
    items = Loop(cfg, run).incremental(1, recheck=recheck)
    ids = [s.id for s in items]
    assert a.id not in ids and c.id not in ids and d.id in ids and len(items) == len(kept(run)) - 2
    assert next(s for s in items if s.id == b.id).instruction.endswith(" here?")
    mix = stages.training_mix(read_jsonl(inputs.original, Sample), items, 0.0, seed=1)
    assert {s.id for s in mix} == set(ids)
    # the same through the commands
    runner = CliRunner()
    res = runner.invoke(cli, ["mix", "--original", str(inputs.original), "--incremental", str(run / "round_1" / "filtered.jsonl"),
                              "--out", str(tmp_path / "mix.jsonl"), "--fraction", "0", "--review", str(run)])
    assert res.exit_code == 0, res.output
    assert "1 rejected, 1 edited, 1 edits failing the filter" in res.output
    assert [s.id for s in read_jsonl(tmp_path / "mix.jsonl", Sample)] == ids
    res = runner.invoke(cli, ["export", str(run / "round_1" / "filtered.jsonl"), "--out", str(tmp_path / "llava.json"),
                              "--form", "direct", "--review", str(run)])
    assert res.exit_code == 0, res.output
    exported = json.loads((tmp_path / "llava.json").read_text())
    assert [e["id"] for e in exported] == [f"{i}-direct" for i in ids]
    res = runner.invoke(cli, ["export", str(run / "round_1" / "filtered.jsonl"), "--out", str(tmp_path / "x.json"),
                              "--review", str(tmp_path)])
    assert res.exit_code == 2 and "no review database" in res.output


def test_ipo_verdicts_in_the_page_feed_ipo(client, run):
    from dataengine.llm.ipo import PageJudge, review
    items = read_jsonl(run / "ipo" / "v1" / "items.jsonl", Sample)
    page = client.get("/ipo").text
    assert page.count("class='item'") == 3 and "pass (p)" in page and "<summary>annotation</summary>" in page
    client.post("/api/decide", json={"round": "ipo-v1", "item": items[0].id, "verdict": "pass"})
    client.post("/api/decide", json={"round": "ipo-v1", "item": items[1].id, "verdict": "fail", "kind": "bad options",
                                     "comment": "two options mean the same"})
    assert client.post("/api/decide", json={"round": "ipo-v1", "item": items[2].id, "verdict": "accept"}).status_code == 400
    shown = []
    judge = PageJudge(run / "review.sqlite", poll=0.05, timeout=0.3, show=shown.append)
    with pytest.raises(DataError, match=f"item {items[2].id}: no verdict"):
        review(items, [], {}, judge)
    assert "waiting for your verdicts on prompt v1" in shown[0]
    client.post("/api/decide", json={"round": "ipo-v1", "item": items[2].id, "verdict": "pass"})
    rv = review(items, [], {}, judge)
    assert (rv.judged, rv.correct) == (3, 2)
    assert [(f.item, f.failure_type, f.explanation) for f in rv.failures] == [(items[1].id, "bad options", "two options mean the same")]


def test_the_command_serves_on_loopback_and_refuses_other_hosts(run):
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.support.browser import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dataengine.cli", "review", str(run), "--port", str(port)],
                            env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the review server did not start"
                time.sleep(0.2)
        assert r.status_code == 200 and "class='item'" in r.text
        assert httpx.get(f"http://127.0.0.1:{port}/", headers={"host": "evil.example"}).status_code == 400
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert f"review page: http://127.0.0.1:{port}/" in out


def test_ipo_runs_on_the_verdicts_given_in_the_page(world, tmp_path):
    """IPO with `--review page`: each prompt version's items wait for a person's verdicts in the page."""
    import re
    import threading
    import time

    from dataengine.llm.client import LLMClient, LLMConfig
    from dataengine.llm.ipo import Failure, PageJudge, optimize
    from tests.support.fake_llm import FakeLLM
    from tests.support.writers import writer

    signs = [a for a in read_jsonl(world.pool, ImageAnnotation) if a.texts][:12]
    out, result = tmp_path / "ipo", {}
    with FakeLLM(answer=writer) as srv:
        judge = PageJudge(tmp_path / "review.sqlite", poll=0.05, timeout=60, show=lambda m: None)
        t = threading.Thread(target=lambda: result.update(res=optimize(LLMClient(LLMConfig(base_urls=[srv.url])), signs, out,
                                                                       rounds=3, target=0.9, per_type=2, qtypes=[9], judge=judge,
                                                                       log=lambda m: None)))
        t.start()

        def judge_in_page(version: int, verdict: str) -> int:
            deadline = time.monotonic() + 60
            while not (out / f"v{version}" / "items.jsonl").exists():
                assert time.monotonic() < deadline and t.is_alive(), f"no items of v{version}"
                time.sleep(0.05)
            page = TestClient(create_app(tmp_path)).get("/ipo", params={"version": version}).text
            ids = re.findall(r"data-item='([^']+)'", page)
            c = TestClient(create_app(tmp_path))
            for i in ids:
                r = c.post("/api/decide", json={"round": f"ipo-v{version}", "item": i, "verdict": verdict,
                                                "kind": "wrong answer", "comment": f"{verdict} by a person"})
                assert r.status_code == 200, r.text
            return len(ids)

        assert judge_in_page(1, "fail") == 2  # the person fails v1's items ...
        assert judge_in_page(2, "pass") == 2  # ... and passes those of the rewrite
        t.join(60)
    res = result["res"]
    assert res.stopped == "target met" and [v.correctness for v in res.versions] == [0.0, 1.0]
    failures = read_jsonl(out / "v1" / "failures.jsonl", Failure)
    assert [f.explanation for f in failures] == ["fail by a person"] * 2


def test_the_loop_trains_round_k_on_its_items_as_reviewed(client, run, monkeypatch):
    """The loop's own round: its training set leaves the rejected item out and trains on the edit."""
    from dataengine.records import write_json
    from dataengine.sample import Plan, TypePlan

    a, b, c = kept(run)[:3]
    client.post("/api/decide", json={"round": "1", "item": a.id, "verdict": "reject"})
    client.post("/api/decide", json={"round": "1", "item": b.id, "verdict": "edit",
                                     "edited": {"answer": "As the picture shows: " + b.answer}})
    client.post("/api/decide", json={"round": "1", "item": c.id, "verdict": "edit", "edited": wrong_answer(c)})
    write_json(run / "round_1" / "plan.json", Plan(types={3: TypePlan(qtype=3, name="Instance Attributes", count=2)}))
    trained = {}

    class Stop(Exception):
        pass

    def train_model(model, data, image_root, out, cfg, progress=None, log=None, annotations=None):
        trained["data"], trained["annotations"] = data, annotations
        raise Stop

    monkeypatch.setattr(stages, "train_model", train_model)
    cfg = load_config(run / "config.yaml")
    cfg.train.original_fraction = 0.0
    cfg.train.ground_attention = 1.0  # which needs the pool's annotations
    inputs = stages.resolve_inputs(cfg, run)
    benchmark, questions = stages.read_questions(inputs)
    loop = Loop(cfg, run, console=Console(quiet=True))
    pool = read_jsonl(inputs.pool, ImageAnnotation)
    try:
        with pytest.raises(Stop):
            loop.round(1, inputs, questions, read_jsonl(inputs.original, Sample), pool, stages.benchmark_guard(benchmark, inputs))
    finally:
        (run / "round_1" / "plan.json").unlink()
    ids = [s.id for s in trained["data"]]
    assert a.id not in ids and c.id not in ids and b.id in ids and len(ids) == len(kept(run)) - 2
    assert next(s for s in trained["data"] if s.id == b.id).answer.startswith("As the picture shows: ")
    assert trained["annotations"] == pool


def test_the_ipo_command_takes_verdicts_from_the_page(world, tmp_path):
    import threading
    import time

    from tests.support.fake_llm import FakeLLM
    from tests.support.writers import writer

    signs = [a for a in read_jsonl(world.pool, ImageAnnotation) if a.texts][:12]
    from dataengine.records import write_jsonl
    write_jsonl(tmp_path / "pool.jsonl", signs)
    out, result = tmp_path / "ipo", {}
    with FakeLLM(answer=writer) as srv:
        args = ["ipo", "--pool", str(tmp_path / "pool.jsonl"), "--out", str(out), "--llm-url", srv.url, "--review", "page",
                "--types", "9", "--per-type", "2", "--rounds", "1"]
        t = threading.Thread(target=lambda: result.update(res=CliRunner().invoke(cli, args)))
        t.start()
        deadline = time.monotonic() + 60
        while not (out / "v1" / "items.jsonl").exists():
            assert time.monotonic() < deadline and t.is_alive(), "no items of v1"
            time.sleep(0.05)
        c = TestClient(create_app(tmp_path))
        for s in read_jsonl(out / "v1" / "items.jsonl", Sample):
            assert c.post("/api/decide", json={"round": "ipo-v1", "item": s.id, "verdict": "pass"}).status_code == 200
        t.join(60)
    res = result["res"]
    assert res.exit_code == 0, res.output
    assert f"dataengine review {tmp_path}" in res.output.replace("\n", "") and "stopped: target met; best v1" in res.output


def test_only_picture_files_are_served(client, run):
    """A file under an image root that is no picture (by its suffix, or by its contents) gets 404."""
    root = run / "world" / "images"
    (root / "notes.txt").write_text("notes")
    (root / "pool" / "fake.png").write_text("not a picture")
    for path in ("/image/notes.txt", "/image/pool/fake.png", "/image/pool"):
        r = client.get(path)
        assert r.status_code == 404 and "notes" not in r.text.replace("notes.txt", ""), path
    assert client.get(f"/image/{kept(run)[0].image}").headers["content-type"] == "image/png"


def test_the_command_refuses_a_bad_port_or_image_root_in_one_line(run):
    import socket

    from tests.support.browser import free_port
    res = CliRunner().invoke(cli, ["review", str(run), "--port", "99999"])
    assert res.exit_code == 2 and "port 99999: not a port (1-65535)" in res.output and "Traceback" not in res.output
    assert "review page" not in res.output
    with socket.socket() as busy:  # a port another server listens on: refused before anything is announced
        port = free_port()
        busy.bind(("127.0.0.1", port))
        busy.listen()
        res = CliRunner().invoke(cli, ["review", str(run), "--port", str(port)])
    assert res.exit_code == 2 and f"127.0.0.1:{port}: cannot listen there" in res.output and "review page" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    for args in (["--check"], []):
        res = CliRunner().invoke(cli, ["review", str(run), "--image-root", str(run / "nonexistent"), *args])
        assert res.exit_code == 2 and "nonexistent: no such image root" in res.output and "Traceback" not in res.output


def test_an_edits_answer_sentence_and_letter_are_checked(client, run):
    from dataengine.filter import check_sentence
    from dataengine.review.store import Decision, answer_check, apply
    c = next(s for s in kept(run) if s.qtype == 5)  # "How many ...?": the short answer is a number word
    wrong = {"one": "four", "two": "four"}.get(c.short_answer, "one")
    r = client.post("/api/decide", json={"round": "1", "item": c.id, "verdict": "edit",
                                         "edited": {"answer": f"There are {wrong} rings."}}).json()
    assert r["check"] == "the answer sentence does not say the short answer" and "fails the filter" in r["text"]
    other = next(o for o in c.options if o != c.short_answer)  # another option as the short answer, the letter unchanged
    r = client.post("/api/decide", json={"round": "1", "item": c.id, "verdict": "edit",
                                         "edited": {"short_answer": other, "answer": f"There are {other}."}}).json()
    assert r["check"] == "the marked letter's option is not the short answer"
    r = client.post("/api/decide", json={"round": "1", "item": c.id, "verdict": "edit",
                                         "edited": {"answer": f"I count {c.short_answer.upper()} of them."}}).json()
    assert r["check"] == ""  # the short answer in other words and case passes
    # as the loop applies it (the filter's recheck passes it; the sentence does not), and without a recheck
    bad = c.model_copy(update={"answer": f"There are {wrong} rings."})
    decisions = {c.id: Decision(round="1", item=c.id, verdict="edit", edited=bad)}
    for recheck in (lambda s, seen: "", None):
        applied = apply(decisions, [c], recheck=recheck)
        assert applied.items == [] and applied.failing == {c.id: "the answer sentence does not say the short answer"}
    # the sentence is only asked to say the short answer where an edit changed one of them
    odd = c.model_copy(update={"answer": "The count is what it is."})
    assert answer_check(odd.model_copy(update={"instruction": c.instruction + " "}), odd) == ""
    assert check_sentence(c.model_copy(update={"short_answer": "B", "answer": "The second one."})) is None  # letter only
    assert check_sentence(c.model_copy(update={"short_answer": "one", "answer": "There is none."})) is not None  # whole words
