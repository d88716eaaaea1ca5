"""A conversation about one image: turns of (user, assistant), each with the source it came from,
the answer format its instruction asks for, and the item it was made from.

The format instructions are those LLaVA-1.5 and "COCO is ALL you need" (arXiv 2401.08968) put after
each source's questions, so a model learns to follow the instruction, not the source's habit.
"""
from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator, model_validator

from ..benchmarks.answers import LETTER_INSTRUCTION
from ..errors import DataError

# format -> the instruction said after the question
FORMATS: dict[str, str] = {
    "letter": LETTER_INSTRUCTION,
    "word": "Answer the question using a single word or phrase.",
    "box": "Answer with a box [x1, y1, x2, y2], coordinates from 0 to 1.",
    "sentence": "Answer with a full sentence.",
}


class Turn(BaseModel):
    """One round: what the user says (question and format instruction) and what the assistant answers."""
    user: str
    assistant: str
    source: str  # where the item came from: "generated", "starter", "caption", "region", "grounding", "existence", ...
    format: str  # one of FORMATS
    item: str  # the id of the item this turn was made from (provenance)
    annotation: bool = False  # made from the pool's annotation (caption, region, grounding, yes/no), not an item
    # the item of an earlier turn this one refers back to ("What colour is it?"): `merge` keeps the two
    # in one conversation, this one after it
    follows: str | None = None

    @field_validator("format")
    @classmethod
    def known_format(cls, v: str) -> str:
        if v not in FORMATS:
            raise ValueError(f"format {v!r} is not one of {', '.join(FORMATS)}")
        return v


class Conversation(BaseModel):
    """Turns about one image; the image is shown once, at the start of the first user turn. A turn
    that refers back (`Turn.follows`) comes after the turn it names, in the same conversation."""
    id: str
    image: str
    turns: list[Turn] = Field(min_length=1)

    @model_validator(mode="after")
    def follows_earlier_turns(self) -> "Conversation":
        seen: set[str] = set()
        for t in self.turns:
            if t.item in seen:
                raise ValueError(f"item {t.item}: two turns of this conversation")
            if t.follows is not None and t.follows not in seen:
                raise ValueError(f"item {t.item}: follows item {t.follows}, which is not an earlier turn of this conversation")
            seen.add(t.item)
        return self

    def pairs(self) -> list[tuple[str, str]]:
        return [(t.user, t.assistant) for t in self.turns]


def with_instruction(question: str, fmt: str) -> str:
    """The question as asked in a turn: the question, then its format's instruction on a line of its own."""
    return f"{question.strip()}\n{FORMATS[fmt]}"


def format_box(box: tuple[float, float, float, float], width: float, height: float) -> str:
    """A box in pixels (x1, y1, x2, y2) as the text a box answer is: "[0.12, 0.30, 0.45, 0.61]", in 0-1
    of the image's width and height, two decimals (as Shikra and Qwen-VL write boxes, scaled to 0-1)."""
    x1, y1, x2, y2 = box
    return "[" + ", ".join(f"{min(max(v, 0.0), 1.0):.2f}" for v in (x1 / width, y1 / height, x2 / width, y2 / height)) + "]"


_NUMBER = r"\s*([01](?:\.\d+)?|\.\d+)\s*"
_BOX = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")
_LETTER = re.compile(r"\(?([A-H])\)?\.?")


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The box a reply is (the whole reply, "[x1, y1, x2, y2]" in 0-1, x1 <= x2, y1 <= y2), else None."""
    m = _BOX.fullmatch(text.strip())
    if not m:
        return None
    x1, y1, x2, y2 = (float(v) for v in m.groups())
    if not all(0 <= v <= 1 for v in (x1, y1, x2, y2)) or x1 > x2 or y1 > y2:
        return None
    return x1, y1, x2, y2


def parse_letter(text: str) -> str | None:
    m = _LETTER.fullmatch(text.strip())
    return m.group(1) if m else None


def complies(reply: str, fmt: str) -> bool:
    """Whether a reply has the form its format instruction asked for: `letter` one option letter
    ("B", "(B)", "B."); `word` a single word or short phrase (1-3 words, no sentence, no box);
    `box` "[x1, y1, x2, y2]" in 0-1; `sentence` a sentence (at least 3 words, ending in . ! or ?)."""
    text = reply.strip()
    if fmt == "letter":
        return parse_letter(text) is not None
    if fmt == "word":
        words = text.rstrip(".").split()
        return 1 <= len(words) <= 3 and parse_box(text) is None and not re.search(r"[.!?]\s", text)
    if fmt == "box":
        return parse_box(text) is not None
    if fmt == "sentence":
        return len(text.split()) >= 3 and text[-1:] in ".!?"
    raise ValueError(f"unknown answer format {fmt!r}; known: {', '.join(FORMATS)}")


def normalise(text: str) -> str:
    """A short answer compared as words: lower case, no punctuation, no article."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def check_items_once(conversations: list[Conversation]) -> None:
    """DataError naming the item and both conversations when an item is a turn of two conversations,
    or naming the conversation when one is given twice: every item is trained on once."""
    where: dict[str, str] = {}
    ids: set[str] = set()
    for c in conversations:
        if c.id in ids:
            raise DataError(f"conversation {c.id}: given twice")
        ids.add(c.id)
        for t in c.turns:
            if (other := where.setdefault(t.item, c.id)) != c.id:
                raise DataError(f"conversation {c.id}: item {t.item}: also a turn of conversation {other}")
