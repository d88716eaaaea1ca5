"""The LLM backend of detection, correction and style, against a stand-in server that reads the
annotation it is sent the way an LLM would be asked to."""
import json
import re

from dataengine.generate.describe import Description
from dataengine.generate.hallucination_llm import LLMHallucinations
from dataengine.generate.pairs import make_pairs
from dataengine.llm.client import LLMClient, LLMConfig
from dataengine.records import ImageAnnotation, ObjectAnn
from tests.support.fake_llm import FakeLLM

ANN = ImageAnnotation(image_id="i", image="i.png", width=96, height=96,
                      objects=[ObjectAnn(id=0, name="ball", bbox=(8, 8, 24, 24), attributes=["red"])])


def answer(body):
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if system.startswith("You check"):
        lines = re.findall(r"^(\d+)\. (.*)$", user, re.M)
        if "garbled" in user:
            return "I am not sure."
        return json.dumps({"sentences": [{"index": int(i), "verdict": "hallucinated" if "star" in s else "correct",
                                          "reason": "there is no star" if "star" in s else ""} for i, s in lines]})
    if system.startswith("You correct"):
        text = user.split("Description:\n", 1)[1].split("\n\nFalse:")[0]
        assert "red ball" in user and "there is no star" in user  # the annotation and what was false
        return json.dumps({"description": text.replace(" A star.", "")})
    return json.dumps({"description": user.upper()})  # the style rewrite: one style for both sides


def test_llm_detects_corrects_and_restyles_through_the_cached_client(tmp_path):
    descs = [Description(id="d1", image="i.png", prompt="Describe.", text="A red ball. A star."),
             Description(id="d2", image="i.png", prompt="Describe.", text="A red ball."),
             Description(id="d3", image="i.png", prompt="Describe.", text="A garbled answer.")]
    pool = {"i.png": ANN}
    with FakeLLM(answer=answer) as srv:
        llm = LLMHallucinations(LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "c.sqlite"))
        judged = llm.detect(descs, pool)
        assert [[s.verdict for s in j.sentences] for j in judged] == [["correct", "hallucinated"], ["correct"], ["unjudged"]]
        assert judged[0].sentences[1].reasons == ["there is no star"] and judged[0].detector.endswith("hallucination-v1")
        assert llm.problems == [{"item": "d3", "reason": "unreadable answer"}]  # unreadable: unjudged, never guessed
        fixes = llm.correct_all(judged, pool)
        assert fixes == {"d1": "A red ball."}
        pairs = make_pairs(judged, pool, [], corrections=fixes, restyle=llm.restyle_all)
        assert [(p.chosen, p.rejected) for p in pairs] == [("A RED BALL.", "A RED BALL. A STAR.")]
        calls = len(srv.bodies)
        # again: every answer comes from the cache
        again = LLMHallucinations(LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "c.sqlite"))
        assert make_pairs(again.detect(descs, pool), pool, [], corrections=again.correct_all(judged, pool),
                          restyle=again.restyle_all) == pairs
        assert len(srv.bodies) == calls  # no new call


def test_the_hadpo_stages_use_the_llm_when_configured(tmp_path):
    from dataengine.config import HADPOConfig
    from dataengine.generate.hallucination import Judged
    from dataengine.generate.pairs import PreferencePair
    from dataengine.hadpo import detect_hallucinations, pair_up
    from dataengine.records import read_jsonl
    descs = [Description(id="d1", image="i.png", prompt="Describe.", text="A red ball. A star.")]
    cfg = HADPOConfig(detector="llm", style="llm")
    with FakeLLM(answer=answer) as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "c.sqlite")
        judged = detect_hallucinations(descs, [ANN], ["ball", "star"], tmp_path / "judged.jsonl", cfg, llm=lambda: client)
        pairs = pair_up(judged, [ANN], ["ball", "star"], tmp_path / "pairs.jsonl", cfg, llm=lambda: client)
    assert read_jsonl(tmp_path / "judged.jsonl", Judged) == judged and judged[0].detector.endswith("hallucination-v1")
    assert [(p.chosen, p.rejected) for p in read_jsonl(tmp_path / "pairs.jsonl", PreferencePair)] == [("A RED BALL.", "A RED BALL. A STAR.")]
    assert pairs[0].detector.endswith("hallucination-v1")
