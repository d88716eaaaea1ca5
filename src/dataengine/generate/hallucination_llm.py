"""The LLM backend of HA-DPO's detection, correction and style rewrite (arXiv 2311.16839): any
OpenAI-compatible server is given the image's annotation, as HA-DPO gave GPT-4 Visual Genome's,
through the project's client (concurrency, retries, cache: a re-run makes no new call). The
prompts are a versioned file (`llm/prompts/hallucination-v<n>.yaml`).
"""
from __future__ import annotations

from importlib import resources

import yaml
from pydantic import BaseModel

from ..llm.client import LLMError
from ..llm.prompt import describe as annotation_text
from ..llm.prompt import json_object
from ..records import ImageAnnotation
from .hallucination import VERDICTS, Judged, SentenceVerdict, sentences

DETECT_SCHEMA = {"type": "object", "properties": {"sentences": {"type": "array", "items": {
    "type": "object", "properties": {"index": {"type": "integer"}, "verdict": {"type": "string", "enum": list(VERDICTS)},
                                     "reason": {"type": "string"}}, "required": ["index", "verdict"]}}},
    "required": ["sentences"]}
TEXT_SCHEMA = {"type": "object", "properties": {"description": {"type": "string"}}, "required": ["description"]}


class HallucinationPrompts(BaseModel):
    version: int
    detect: str
    correct: str
    style: str


def load_prompts(name: str = "hallucination-v1") -> HallucinationPrompts:
    text = resources.files("dataengine.llm").joinpath("prompts", f"{name}.yaml").read_text()
    return HallucinationPrompts.model_validate(yaml.safe_load(text))




class LLMHallucinations:
    """Detect, correct and restyle with an LLM. Answers that cannot be read leave the description
    unjudged (detect) or make no pair (correct, style): counted in `problems`, never guessed."""

    def __init__(self, client, prompts: HallucinationPrompts | None = None):
        self.client, self.prompts = client, prompts or load_prompts()
        self.name = f"llm:{client.cfg.model}:hallucination-v{self.prompts.version}"
        self.problems: list[dict] = []

    def _ask(self, system: str, user: str, schema: dict) -> dict:
        return self.client.body([{"role": "system", "content": system}, {"role": "user", "content": user}], schema, seed=0)

    def _run(self, bodies: list[dict], what: list[str]) -> list[dict | None]:
        out = []
        for name, answer in zip(what, self.client.run(bodies)):
            obj = None if isinstance(answer, LLMError) else json_object(answer.text)
            if obj is None:
                self.problems.append({"item": name, "reason": str(answer) if isinstance(answer, LLMError) else "unreadable answer"})
            out.append(obj)
        return out

    def detect(self, descriptions: list, pool: dict[str, ImageAnnotation]) -> list[Judged]:
        """A `Judged` per description (`Description` records), each sentence's verdict by the LLM."""
        split = [sentences(d.text) for d in descriptions]
        bodies = [self._ask(self.prompts.detect, f"{annotation_text(pool[d.image], 9)}\n\nDescription:\n" +
                            "\n".join(f"{i}. {s}" for i, s in enumerate(parts, 1)), DETECT_SCHEMA)
                  for d, parts in zip(descriptions, split)]
        out = []
        for d, parts, obj in zip(descriptions, split, self._run(bodies, [d.id for d in descriptions])):
            said = {}
            for v in (obj or {}).get("sentences", []) if isinstance((obj or {}).get("sentences"), list) else []:
                if isinstance(v, dict) and isinstance(v.get("index"), int) and v.get("verdict") in VERDICTS:
                    said[v["index"]] = v
            verdicts = [SentenceVerdict(text=s, verdict=said.get(i, {}).get("verdict", "unjudged"),
                                        reasons=[str(said[i].get("reason", ""))] if said.get(i, {}).get("verdict") == "hallucinated" else [])
                        for i, s in enumerate(parts, 1)]
            out.append(Judged(id=d.id, image=d.image, prompt=d.prompt, text=d.text, sentences=verdicts, detector=self.name))
        return out

    def correct_all(self, judged: list[Judged], pool: dict[str, ImageAnnotation]) -> dict[str, str]:
        """The corrected text of each hallucinated description, by id (those the LLM answered)."""
        todo = [j for j in judged if j.hallucinated]
        bodies = [self._ask(self.prompts.correct, f"{annotation_text(pool[j.image], 9)}\n\nDescription:\n{j.text}\n\n"
                            f"False: " + "; ".join(r for s in j.sentences for r in s.reasons), TEXT_SCHEMA) for j in todo]
        return {j.id: obj["description"] for j, obj in zip(todo, self._run(bodies, [j.id for j in todo]))
                if obj and isinstance(obj.get("description"), str) and obj["description"].strip()}

    def restyle_all(self, texts: list[str]) -> dict[str, str]:
        """The style rewrite of each text, by the text (those the LLM answered)."""
        unique = list(dict.fromkeys(texts))
        bodies = [self._ask(self.prompts.style, t, TEXT_SCHEMA) for t in unique]
        return {t: obj["description"] for t, obj in zip(unique, self._run(bodies, unique))
                if obj and isinstance(obj.get("description"), str) and obj["description"].strip()}
