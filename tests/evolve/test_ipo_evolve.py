"""IPO on the evolution prompt: versions judged by the annotation verifier, the LLM's rewrite of the
rules adopted when it measures better, and `evolve` using the best version's rules."""
import json
import re

from dataengine import stages
from dataengine.config import EvolveConfig, IPOConfig, RunConfig
from dataengine.llm.client import LLMClient, LLMConfig
from dataengine.llm.prompt import PromptStore
from dataengine.records import ImageAnnotation, ObjectAnn, Sample
from tests.support.fake_llm import FakeLLM

COLORS = ["red", "blue", "white", "black"]
POOL = [ImageAnnotation(image_id=f"i{k}", image=f"i{k}.png", width=96, height=96, objects=[
    ObjectAnn(id=0, name="ball", bbox=(8, 40, 24, 56), attributes=[COLORS[k]]),
    ObjectAnn(id=1, name="box", bbox=(60, 40, 76, 56), attributes=[COLORS[3 - k]])]) for k in range(4)]
SEEDS = [Sample(id=f"s{k}", image=f"i{k}.png", instruction="What color is the box?", answer="", short_answer=COLORS[3 - k],
                options=COLORS, choice_answer="ABCD"[3 - k], qtype=3) for k in range(4)]


def answer(body):
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if system.startswith("You improve"):
        return json.dumps({"confusing": ["which option is correct"], "rules": [
            "NEW RULE: mark the statement the annotation makes true.", "Refer to one object.", "Four options."]})
    color = re.search(r"- (\w+) ball:", user).group(1)  # what the annotation says of the ball
    statements = [f"The ball is {c}." for c in COLORS]
    right = COLORS.index(color) if "NEW RULE" in system else (COLORS.index(color) + 1) % 4  # v1 marks a wrong one
    return json.dumps({"question": "Which statement about the image is true?", "answer": statements[right],
                       "short_answer": statements[right], "options": statements, "correct": "ABCD"[right], "steps": ["find the ball"]})


def test_ipo_improves_the_evolution_prompt_and_evolve_uses_the_best(tmp_path):
    cfg = RunConfig(evolve=EvolveConfig(rounds=1, generator="llm"), ipo=IPOConfig(rounds=2, per_type=2, target=0.9, clarify=False))
    with FakeLLM(answer=answer) as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "c.sqlite")
        res = stages.optimize_evolve_prompt(client, SEEDS, POOL, tmp_path / "ipo", cfg, log=lambda m: None)
        assert [v.correctness for v in res.versions] == [0.0, 1.0] and res.best.version == 2 and res.stopped == "target met"
        assert res.versions[1].template == "evolve-v1" and "NEW RULE" in res.versions[1].rules
        failures = (tmp_path / "ipo" / "v1" / "failures.jsonl").read_text()
        assert "wrong answer" in failures  # the verifier found v1's children wrong

        cfg = cfg.model_copy(update={"evolve": cfg.evolve.model_copy(update={"prompts": str(tmp_path / "ipo" / "prompts.jsonl")})})
        before = len(srv.bodies)
        kept = stages.evolve_items(SEEDS, POOL, tmp_path / "ev", cfg, llm=lambda: client)
        assert len(kept) == 4 and all(c.lineage.verdict.correct for c in kept)
        assert all("NEW RULE" in b["messages"][0]["content"] for b in srv.bodies[before:])
    assert PromptStore(tmp_path / "ipo" / "prompts.jsonl").best().version == 2
