"""An LLM grader for open-ended answers on real data, as MM-Vet grades (Yu et al., arXiv 2308.02490):
the LLM compares a reply with the reference answer and gives a score from 0 to 1. The grader prompt
is a versioned file (`llm/prompts/grade-v<n>.yaml`); requests go through the project's client, so
answers are cached and retried like every other LLM request.
"""
from __future__ import annotations

import re
from importlib import resources
from string import Template

import yaml
from pydantic import BaseModel

_SCORE = re.compile(r"(?<![\d.])(0(?:\.\d+)?|1(?:\.0+)?|\.\d+)(?![\d.])")


class GraderPrompt(BaseModel):
    version: int
    grade: str


def load_grader(name: str = "grade-v1") -> GraderPrompt:
    text = resources.files("dataengine.llm").joinpath("prompts", f"{name}.yaml").read_text()
    return GraderPrompt.model_validate(yaml.safe_load(text))


def grade_messages(prompt: GraderPrompt, question: str, reference: str, reply: str) -> list[dict]:
    # a "|" or a line break would end the table row early
    clean = lambda t: " ".join(t.replace("|", "/").split())  # noqa: E731
    text = Template(prompt.grade).substitute(question=clean(question), reference=clean(reference), reply=clean(reply))
    return [{"role": "user", "content": text}]


def read_score(text: str) -> float | None:
    """The first number from 0 to 1 in the grader's answer ("0.7", "Correctness: 1.0"); None when there is none."""
    m = _SCORE.search(text)
    return float(m.group(1)) if m else None


def llm_grader(client, prompt: GraderPrompt | None = None):
    """A grader for `evaluate_dialogs`: [(question, reference, reply)] -> a 0-1 score each, None
    where the LLM failed or gave no score (one request each, seed 0, cached by the client)."""
    from ..llm.client import LLMError
    prompt = prompt or load_grader()

    def grade(items: list[tuple[str, str, str]]) -> list[float | None]:
        if not items:
            return []
        answers = client.run([client.body(grade_messages(prompt, q, ref, r), seed=0, max_tokens=8) for q, ref, r in items])
        return [None if isinstance(a, LLMError) else read_score(a.text) for a in answers]
    grade.version = f"grade-v{prompt.version}"
    return grade
