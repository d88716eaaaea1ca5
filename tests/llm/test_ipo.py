import json

import pytest

from dataengine.generate import LLMGenerator, generate
from dataengine.llm.client import LLMClient, LLMConfig
from dataengine.llm.ipo import Failure, auto_judge, human_judge, optimize
from dataengine.llm.prompt import PromptStore, prompt_for
from dataengine.records import ImageAnnotation, read_jsonl
from tests.support.fake_llm import FakeLLM
from tests.support.writers import writer


@pytest.fixture
def signs(world):
    return [a for a in read_jsonl(world.pool, ImageAnnotation) if a.texts][:12]


def test_ipo_improves_the_prompt_and_stores_every_version(signs, tmp_path):
    with FakeLLM(answer=writer) as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "cache.sqlite")
        res = optimize(client, signs, tmp_path, rounds=3, target=0.9, per_type=3, qtypes=[9], log=lambda m: None)
        calls = len(srv.bodies)
        again = optimize(client, signs, tmp_path, rounds=3, target=0.9, per_type=3, qtypes=[9], log=lambda m: None)
        calls_again = len(srv.bodies) - calls  # a re-run resumes from the store and the cache
        # generate then uses the best version and names it in every item
        gen = LLMGenerator(client, prompt_for(PromptStore(tmp_path / "prompts.jsonl").best()))
        items = gen.generate_batch(9, signs[3:5], [], None)
    assert all(s.generator.endswith("prompt-v2") for s in items) and len(items) == 2
    assert res.stopped == "target met" and calls == 3 + 1 + 3 and calls_again == 0  # items, rewrite, items
    v1, v2 = res.versions
    assert (v1.correctness, v2.correctness) == (0.0, 1.0) and v2.parent == 1 and "MARKER" in v2.rules
    assert v2.feedback == ["confusing: 'Use only the information given' is vague"]
    assert res.best.version == 2 and again.best.version == 2
    failures = read_jsonl(tmp_path / "v1" / "failures.jsonl", Failure)
    assert len(failures) == 3 and {f.failure_type for f in failures} == {"wrong answer"}


def test_ipo_stops_when_a_round_does_not_improve(signs, tmp_path):
    stale = lambda body: writer(body).replace("MARKER", "")  # noqa: E731 - rewrites change nothing
    with FakeLLM(answer=stale) as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "c.sqlite")
        res = optimize(client, signs, tmp_path, rounds=5, per_type=2, qtypes=[9], log=lambda m: None)
    assert res.stopped == "no improvement" and len(res.versions) == 2 and res.best.version == 1


def test_a_rejected_rewrite_is_not_stored(signs, tmp_path):
    with FakeLLM(answer=writer) as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url]))
        res = optimize(client, signs, tmp_path, per_type=2, qtypes=[9], accept=lambda cur, new: None, log=lambda m: None)
    assert res.stopped == "rewrite rejected" and len(res.versions) == 1


def test_human_and_automatic_reviews_give_the_same_failure_records(signs, tmp_path):
    with FakeLLM(answer=writer) as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url]))
        [item] = LLMGenerator(client, prompt_for(None)).generate_batch(9, signs[:1], [], None)
    auto = auto_judge(item, signs[0])
    answers = iter(["n", "0", "the sign says something else"])
    shown = []
    human = human_judge(item, signs[0], ask=lambda _: next(answers), show=shown.append)
    assert type(auto) is type(human) is Failure
    assert auto.failure_type == human.failure_type == "wrong answer" and human.item == auto.item
    assert signs[0].image in shown[0] and signs[0].texts[0].text in shown[0]  # the reviewer sees image and annotation
    assert human_judge(item, signs[0], ask=lambda _: "y", show=shown.append) is None


def test_llm_generator_counts_skips_malformed_and_failed_and_keeps_the_rest(signs, tmp_path):
    replies = iter(['{"skip": "nothing to ask"}', "no json here", None, None, None, None, None, None])

    def answer(body):
        r = next(replies)
        return r if r is not None else writer(body)
    with FakeLLM(answer=answer, script=["ok", "ok", 500, 500, 500]) as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url], max_retries=2, backoff=0.01, concurrency=1))
        gen = LLMGenerator(client, prompt_for(None))
        items = generate({9: 4}, signs, gen, oversample=1, max_images=2)
    assert dict(gen.outcomes[9]) == {"skip": 1, "malformed": 1, "failed": 1, "item": 4}
    assert len(items) == 4 and {p["kind"] for p in gen.problems} == {"skip", "malformed", "failed"}
    for s in items:  # options were shuffled after generation; the letter follows the answer
        assert s.options[ord(s.choice_answer) - 65] == s.short_answer
    assert len({s.choice_answer for s in items}) > 1


def test_vision_llms_are_sent_the_image(signs, world):
    import base64
    with FakeLLM(answer=writer) as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url], send_image=True))
        items = LLMGenerator(client, prompt_for(None), image_root=str(world.image_root)).generate_batch(9, signs[:1], [], None)
    assert len(items) == 1 and len(srv.bodies) == 1
    content = srv.bodies[0]["messages"][-1]["content"]
    url = content[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == (world.image_root / signs[0].image).read_bytes()
    assert "Write one Text Understanding question." in content[1]["text"]


def test_cli_ipo_with_a_person_reviewing_and_accepting(signs, world, tmp_path):
    from typer.testing import CliRunner

    from dataengine.cli import app
    from dataengine.records import write_jsonl
    write_jsonl(tmp_path / "pool.jsonl", signs)
    with FakeLLM(answer=writer) as srv:
        # v1's item: reject it as a wrong answer; accept the rewrite; v2's item: accept it
        r = CliRunner().invoke(app, ["ipo", "--pool", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "ipo"),
                                     "--llm-url", srv.url, "--review", "human", "--types", "9", "--per-type", "1",
                                     "--rounds", "2"], input="n\n0\nthe sign says another word\na\ny\n")
    assert r.exit_code == 0, r.output
    assert "image: pool/" in r.output and "+- One option is correct. MARKER" in r.output
    versions = [json.loads(line) for line in (tmp_path / "ipo" / "prompts.jsonl").read_text().splitlines()]
    assert [v["correctness"] for v in versions] == [0.0, 1.0]
    failures = (tmp_path / "ipo" / "v1" / "failures.jsonl").read_text()
    assert '"failure_type":"wrong answer"' in failures and "the sign says another word" in failures
    assert "stopped: target met; best v2" in r.output
