"""Export generated data to the LLaVA conversation JSON, so it trains other stacks too."""
from __future__ import annotations

from pathlib import Path

from .records import LETTERS, Sample, write_json
from .evaluate import LETTER_INSTRUCTION


def to_llava(samples: list[Sample], form: str = "both") -> list[dict]:
    """`direct`: question -> answer sentence; `choice`: question + options -> letter; `both`: one of each."""
    if form not in ("direct", "choice", "both"):
        raise ValueError(f"unknown form {form!r}: direct, choice or both")
    out = []
    for s in samples:
        if form in ("direct", "both"):
            out.append({"id": f"{s.id}-direct", "image": s.image, "conversations": [
                {"from": "human", "value": f"<image>\n{s.instruction}"}, {"from": "gpt", "value": s.answer}]})
        if form in ("choice", "both"):
            opts = "\n".join(f"{l}. {o}" for l, o in zip(LETTERS, s.options))
            out.append({"id": f"{s.id}-choice", "image": s.image, "conversations": [
                {"from": "human", "value": f"<image>\n{s.instruction}\n{opts}\n{LETTER_INSTRUCTION}"},
                {"from": "gpt", "value": s.choice_answer}]})
    return out


def export_llava(samples: list[Sample], path: str | Path, form: str = "both") -> Path:
    return write_json(path, to_llava(samples, form))
