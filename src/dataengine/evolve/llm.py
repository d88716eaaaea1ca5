"""The LLM versions of evolution's operators and judge (MMEvol, arXiv 2409.05840), through the
project's client (concurrency, retries, cache: a re-run makes no new call). The prompts are a
versioned file (`llm/prompts/evolve-v<n>.yaml`) whose `rules` block IPO can rewrite like the
generation prompt's.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from string import Template

import yaml
from pydantic import BaseModel

from ..llm.client import LLMError
from ..llm.prompt import ITEM_SCHEMA, describe, json_object, parse
from ..records import LETTERS, ImageAnnotation, Lineage, Sample, Verdict
from .grammar import FORMATS, format_of

EVOLVED_SCHEMA = {"type": "object", "properties": {**ITEM_SCHEMA["properties"], "steps": {"type": "array", "items": {"type": "string"}}},
                  "required": [*ITEM_SCHEMA["required"], "steps"]}
JUDGE_SCHEMA = {"type": "object", "properties": {"improved": {"type": "boolean"}, "correct": {"type": "boolean"},
                                                 "score": {"type": "number"}, "reason": {"type": "string"}},
                "required": ["improved", "correct", "score", "reason"]}


class EvolvePrompts(BaseModel):
    version: int
    system: str
    rules: str
    operators: dict[str, str]
    judge: str


def load_prompts(name: str = "evolve-v1") -> EvolvePrompts:
    text = resources.files("dataengine.llm").joinpath("prompts", f"{name}.yaml").read_text()
    return EvolvePrompts.model_validate(yaml.safe_load(text))


def _item_text(s: Sample) -> str:
    opts = "\n".join(f"{l}. {o}" for l, o in zip(LETTERS, s.options))
    return f"{s.instruction}\n{opts}\nCorrect: {s.choice_answer}"




class LLMEvolver:
    """Evolve and judge with an LLM. An answer that cannot be read makes no child (operators) or no
    verdict (judge): counted in `problems`, never guessed."""

    def __init__(self, client, prompts: EvolvePrompts | None = None, rules: str | None = None):
        self.client, self.prompts = client, prompts or load_prompts()
        self.rules = rules if rules is not None else self.prompts.rules
        self.name = f"llm:{client.cfg.model}:evolve-v{self.prompts.version}"
        self.problems: list[dict] = []

    def _system(self, extra: str) -> str:
        rules = self.rules.strip().replace("\n", "\n  ")
        return Template(self.prompts.system).safe_substitute(rules=rules) + "\n" + extra

    def _answers(self, bodies: list[dict], names: list[str]) -> list[str | None]:
        out = []
        for name, answer in zip(names, self.client.run(bodies)):
            if isinstance(answer, LLMError):
                self.problems.append({"item": name, "reason": str(answer)})
                out.append(None)
            else:
                out.append(answer.text)
        return out

    def evolve_all(self, jobs: list[tuple[Sample, ImageAnnotation, str]], round_: int) -> list[Sample | None]:
        """A child for each (parent, annotation, operator), or None where the LLM gave no usable item."""
        bodies = []
        for parent, ann, op in jobs:
            instruction = Template(self.prompts.operators[op]).safe_substitute(formats=", ".join(FORMATS[1:]))
            user = f"{describe(ann, parent.qtype)}\n\nQuestion to evolve:\n{_item_text(parent)}"
            bodies.append(self.client.body([{"role": "system", "content": self._system(instruction)},
                                            {"role": "user", "content": user}], EVOLVED_SCHEMA, seed=0))
        out = []
        for (parent, ann, op), text in zip(jobs, self._answers(bodies, [p.id for p, _, _ in jobs])):
            parsed = parse(text) if text is not None else None
            if parsed is None or parsed.kind != "item":
                if parsed is not None:
                    self.problems.append({"item": parent.id, "reason": parsed.reason or parsed.kind})
                out.append(None)
                continue
            it = parsed.item
            steps = [str(s) for s in (json_object(text) or {}).get("steps", []) if str(s).strip()]
            root = parent.lineage.root if parent.lineage else parent.id
            key = hashlib.sha1(f"{parent.id}|{op}|{it.question}".encode()).hexdigest()[:8]
            short = it.options[LETTERS.index(it.correct)]
            out.append(Sample(id=f"{root}~e{round_}{op[0]}{key}", image=parent.image, instruction=it.question, answer=it.answer,
                              short_answer=short, options=it.options, choice_answer=it.correct, qtype=parent.qtype,
                              source=parent.source, generator=self.name,
                              lineage=Lineage(parent=parent.id, root=root, operator=op, round=round_,
                                              format=format_of(it.question), steps=steps)))
        return out

    def judge_all(self, pairs: list[tuple[Sample, Sample, ImageAnnotation]]) -> list[Verdict | None]:
        """MMEvol's elimination: improved yes/no, score 1-10, reason (and whether the answer is
        correct by the annotation) for each (parent, child, annotation); None where unreadable."""
        bodies = [self.client.body([{"role": "system", "content": self.prompts.judge},
                                    {"role": "user", "content": f"{describe(ann, child.qtype)}\n\nOriginal question:\n{_item_text(parent)}"
                                                                f"\n\nEvolved question:\n{_item_text(child)}"}], JUDGE_SCHEMA, seed=0)
                  for parent, child, ann in pairs]
        out = []
        for (parent, child, _), text in zip(pairs, self._answers(bodies, [c.id for _, c, _ in pairs])):
            obj = json_object(text) if text is not None else None
            if not obj or not isinstance(obj.get("improved"), bool) or not isinstance(obj.get("correct"), bool):
                if text is not None:
                    self.problems.append({"item": child.id, "reason": "unreadable verdict"})
                out.append(None)
                continue
            score = obj.get("score")
            score = float(score) if isinstance(score, (int, float)) else None
            out.append(Verdict(judge=self.name, kept=obj["improved"] and obj["correct"], improved=obj["improved"],
                               correct=obj["correct"], score=score, reason=str(obj.get("reason", ""))[:300]))
        return out


def ipo_items(seeds: list[Sample], anns: dict[str, ImageAnnotation], operators: list[str]):
    """IPO's `items_for` for the evolution prompt: each seed evolved once (its round-1 operator) with
    the version's rules, the children marked with the version as their source (as generated items
    are), unreadable answers reported as IPO counts them."""
    from .rounds import pick_operator

    def items_for(client, version):
        ev = LLMEvolver(client, load_prompts(version.template), rules=version.rules)
        jobs = [(s, anns[s.image], pick_operator(s.id, 1, operators)) for s in seeds if s.image in anns]
        kids = ev.evolve_all(jobs, 1)
        by_id = {s.id: s for s in seeds}
        problems = [{"kind": "malformed", "image": by_id[p["item"]].image if p["item"] in by_id else p["item"],
                     "qtype": by_id[p["item"]].qtype if p["item"] in by_id else 0, "reason": p["reason"]} for p in ev.problems]
        return [k.model_copy(update={"source": f"ipo-v{version.version}"}) for k in kids if k], problems
    return items_for
