"""The generation prompt: a versioned template file, what the LLM is told about an image, and how its
answer is read back.

The template (`prompts/generate-v1.yaml`) holds a fixed frame and a `rules` block. Interactive
Prompt Optimization (`llm/ipo.py`) rewrites the rules and stores each version with its parent, the
feedback that produced it and its measured correctness (`PromptStore`); `generate` uses the best.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import yaml
from pydantic import BaseModel, ValidationError, field_validator

from ..errors import DataError
from ..records import (
    LETTERS,
    QTYPES,
    ImageAnnotation,
    Prediction,
    read_jsonl,
    write_jsonl,
)

ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "answer": {"type": "string"},
        "short_answer": {"type": "string"},
        "options": {"type": "array", "items": {"type": "string"}, "minItems": 4, "maxItems": 4},
        "correct": {"type": "string", "enum": list(LETTERS[:4])},
    },
    "required": ["question", "answer", "short_answer", "options", "correct"],
}
SKIP_SCHEMA = {"type": "object", "properties": {"skip": {"type": "string"}}, "required": ["skip"]}
SCHEMA = {"anyOf": [ITEM_SCHEMA, SKIP_SCHEMA]}

SIZE_WORDS = {"tiny", "small", "little", "large", "big", "huge"}


def _box(b: list[float], w: float, h: float) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in (b[0] / w, b[1] / h, b[2] / w, b[3] / h)) + "]"


def object_label(name: str, attributes: list[str]) -> str:
    # English puts size before colour ("the large red ball"); the verifier reads that order.
    attrs = sorted(attributes, key=lambda a: a not in SIZE_WORDS)
    return " ".join(attrs + [name])


def render(captions: list[str], objects: list[tuple[str, str]], regions: list[str], relations: list[str],
           texts: list[str]) -> str:
    parts = []
    if captions:
        parts.append("Captions:\n" + "\n".join(f"- {c}" for c in captions))
    if objects:
        parts.append("Objects (label: [x1, y1, x2, y2]):\n" + "\n".join(f"- {label}: {box}" for label, box in objects))
    if regions:
        parts.append("Regions:\n" + "\n".join(f"- {r}" for r in regions))
    if relations:
        parts.append("Relations:\n" + "\n".join(f"- {r}" for r in relations))
    if texts:
        parts.append("Text in the image:\n" + "\n".join(f'- "{t}"' for t in texts))
    return "\n".join(parts)


def describe(ann: ImageAnnotation, qtype: int) -> str:
    """What the generator LLM is told about one image. OCR text only for Text Understanding, as in the paper."""
    w, h = ann.width or 1, ann.height or 1
    labels = {o.id: object_label(o.name, o.attributes) for o in ann.objects}
    objects = [(labels[o.id], _box(o.bbox, w, h)) for o in ann.objects]
    regions = [r.phrase for r in ann.regions if r.phrase not in set(labels.values())]
    # Directions are left out: the boxes already say them, and they would double the prompt.
    relations = [f"{labels[r.subject]} {r.predicate} {labels[r.object]}" for r in ann.relations
                 if r.subject in labels and r.object in labels and r.predicate not in ("left of", "right of", "above", "below")]
    texts = [t.text for t in ann.texts] if qtype == 9 else []
    return render(ann.captions, objects, regions, relations, texts)


class PromptTemplate(BaseModel):
    version: int
    system: str
    rules: str
    bad_cases: str
    example_annotation: dict
    examples: dict[int, dict]


def load_template(name: str = "generate-v1") -> PromptTemplate:
    text = resources.files("dataengine.llm").joinpath("prompts", f"{name}.yaml").read_text()
    return PromptTemplate.model_validate(yaml.safe_load(text))


@dataclass
class Prompt:
    """A template plus the rules of one prompt version."""
    template: PromptTemplate
    rules: str
    version: int = 1

    def system(self, qtype: int) -> str:
        name, definition = QTYPES[qtype]
        rules = self.rules.strip().replace("\n", "\n  ")
        return Template(self.template.system).safe_substitute(type_name=name, type_definition=definition, rules=rules)

    def example_turn(self, qtype: int) -> list[dict]:
        ex = self.template.example_annotation
        text = render(ex.get("captions", []), [(o["label"], json.dumps(o["bbox"])) for o in ex.get("objects", [])],
                      ex.get("regions", []), [], ex.get("texts", []) if qtype == 9 else [])
        return [{"role": "user", "content": f"{text}\n\nWrite one {QTYPES[qtype][0]} question."},
                {"role": "assistant", "content": json.dumps(self.template.examples[qtype])}]

    def messages(self, qtype: int, ann: ImageAnnotation, bad_cases: list[Prediction], image_url: str | None = None) -> list[dict]:
        user = describe(ann, qtype)
        if bad_cases:
            lines = "\n".join(f"- {p.question} (answer: {p.options[LETTERS.index(p.answer)]})" for p in bad_cases)
            user += "\n\n" + Template(self.template.bad_cases).safe_substitute(type_name=QTYPES[qtype][0], examples=lines).strip()
        user += f"\n\nWrite one {QTYPES[qtype][0]} question."
        content: str | list = user
        if image_url:
            content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": user}]
        return [{"role": "system", "content": self.system(qtype)}, *self.example_turn(qtype),
                {"role": "user", "content": content}]


# ---- reading the answer ----

class GeneratedItem(BaseModel):
    question: str
    answer: str
    short_answer: str
    options: list[str]
    correct: str

    @field_validator("options")
    @classmethod
    def four(cls, v):
        if len(v) != 4:
            raise ValueError(f"{len(v)} options, not 4")
        return [str(o).strip() for o in v]


@dataclass
class Parsed:
    kind: str  # "item", "skip" or "malformed"
    item: GeneratedItem | None = None
    reason: str = ""


_FENCE = re.compile(r"^```(?:json)?|```$", re.M)


def json_object(text: str) -> dict | None:
    """The first JSON object in an LLM's reply (code fences and text around it allowed), or None."""
    text = _FENCE.sub("", text.strip())
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder(strict=False).raw_decode(text[start:])  # raw newlines in strings are common
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def parse(text: str) -> Parsed:
    """Read the LLM's answer tolerantly: code fences, text around the JSON, a letter given as option
    text. A skip is a JSON object with "skip" and no question, or a reply that starts with "skip":
    a question that merely contains the word (the original code's substring test) is kept."""
    text = _FENCE.sub("", text.strip()).strip()
    start = text.find("{")
    if start < 0:
        if re.match(r"\W*skip\b", text, re.I):
            return Parsed("skip", reason=text[:200])
        return Parsed("malformed", reason="no JSON object")
    try:
        obj, _ = json.JSONDecoder(strict=False).raw_decode(text[start:])  # raw newlines in strings are common
    except json.JSONDecodeError as e:
        return Parsed("malformed", reason=f"bad JSON ({e.msg})")
    if not isinstance(obj, dict):
        return Parsed("malformed", reason="not a JSON object")
    if "skip" in obj and not obj.get("question"):
        return Parsed("skip", reason=str(obj["skip"])[:200])
    if isinstance(obj.get("options"), list) and "correct" in obj:
        c = str(obj["correct"]).strip().rstrip(".").strip("()")
        if c.upper() in LETTERS[:4]:
            obj["correct"] = c.upper()
        elif c in [str(o) for o in obj["options"]]:
            obj["correct"] = LETTERS[[str(o) for o in obj["options"]].index(c)]
    try:
        item = GeneratedItem.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        return Parsed("malformed", reason=f"{'.'.join(str(x) for x in err['loc']) or 'item'}: {err['msg']}")
    if item.correct not in LETTERS[:4]:
        return Parsed("malformed", reason=f"correct letter {item.correct!r} not A-D")
    return Parsed("item", item=item)


# ---- prompt versions ----

class PromptVersion(BaseModel):
    version: int
    parent: int | None = None
    template: str = "generate-v1"
    rules: str
    feedback: list[str] = []  # the failure summaries that produced this version
    correctness: float | None = None  # share of sampled items judged correct
    judged: int = 0
    per_type: dict[int, float] = {}


class PromptStore:
    """Prompt versions of one project, as JSON lines: each with its parent, feedback and figures."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def versions(self) -> list[PromptVersion]:
        return read_jsonl(self.path, PromptVersion) if self.path.exists() else []

    def initial(self, template: str = "generate-v1", rules: str | None = None) -> PromptVersion:
        """The first version: the store's own, else the template's rules (or `rules`), stored."""
        vs = self.versions()
        if vs:
            return vs[0]
        v = PromptVersion(version=1, template=template, rules=load_template(template).rules if rules is None else rules)
        self.save(v)
        return v

    def save(self, v: PromptVersion) -> None:
        vs = [x for x in self.versions() if x.version != v.version] + [v]
        write_jsonl(self.path, sorted(vs, key=lambda x: x.version))

    def get(self, version: int) -> PromptVersion:
        for v in self.versions():
            if v.version == version:
                return v
        raise DataError(f"{self.path}: no prompt version {version}")

    def best(self) -> PromptVersion | None:
        """The measured version with the highest correctness (the earliest on a tie); None if none is measured."""
        measured = [v for v in self.versions() if v.correctness is not None]
        return max(measured, key=lambda v: (v.correctness, -v.version)) if measured else None


def prompt_for(version: PromptVersion | None, template: str = "generate-v1") -> Prompt:
    t = load_template(version.template if version else template)
    return Prompt(t, version.rules if version else t.rules, version.version if version else 1)
