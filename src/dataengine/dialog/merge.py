"""Merge every item of an image into multi-round conversations, after "COCO is ALL you need for
visual instruction fine-tuning" (Han et al., arXiv 2401.08968, section 3): per image, the items of
all sources (generated items of any round and type, the pool's captions and region descriptions,
POPE-style yes/no questions, grounding questions answered with a box) become the turns of one
conversation, each turn with its source's format instruction, in shuffled order, at most
`max_turns` turns a conversation, the image once at the start.

Every item becomes exactly one turn of exactly one conversation; an item on a benchmark image (the
multiple-choice benchmark's or the dialog benchmark's) is refused, never merged.
"""
from __future__ import annotations

import hashlib
import math
import random
from typing import Callable, Iterable

from ..errors import DataError
from ..records import LETTERS, ImageAnnotation, Sample
from ..registry import Registry
from .conversation import Conversation, Turn, format_box, with_instruction

# How an item with options becomes a turn: its letter, its short answer, or one of the two drawn per item.
SAMPLE_FORMS: Registry[str] = Registry("sample form")
for _form in ("letter", "word", "mixed"):
    SAMPLE_FORMS.register(_form, _form)

# What a pool annotation gives, besides the items: each kind of turn it makes.
POOL_KINDS: Registry[str] = Registry("pool turn kind")
for _kind in ("caption", "region", "grounding", "existence", "followup"):
    POOL_KINDS.register(_kind, _kind)

CAPTION_Q = "Describe the image briefly."

# Which turn opens a conversation: any (the shuffled order), or an item (a generated or original item,
# not one of the annotation's turns, when the image has one; the rest stay shuffled). The opening
# question is the one a question-first template (the tiny model's) shows before the image, as a
# single-round benchmark question is shown; opening with the items keeps them in that layout.
LEADS: Registry[str] = Registry("conversation lead")
for _lead in ("any", "item"):
    LEADS.register(_lead, _lead)


def _coin(key: str) -> bool:
    """A fair coin fixed by a string (the item's id), the same on every machine and run."""
    return hashlib.sha1(key.encode()).digest()[0] % 2 == 0


def sample_turn(s: Sample, form: str = "mixed") -> Turn:
    """The turn an item is: with options, the question, its options and the letter instruction answered
    by the letter (`letter`), or the question with the word instruction answered by the short answer
    (`word`), or one of the two by a coin fixed by the item's id (`mixed`). Without options, the short
    answer with the word instruction when it is one to three words, else the answer with the sentence one."""
    SAMPLE_FORMS.get(form)
    question = s.instruction.replace("<image>", "").strip()
    if s.options and s.choice_answer in LETTERS[:len(s.options)]:
        letter = form == "letter" or (form == "mixed" and _coin(s.id))
        if letter:
            opts = "\n".join(f"{l}. {o}" for l, o in zip(LETTERS, s.options))
            return Turn(user=with_instruction(f"{question}\n{opts}", "letter"), assistant=s.choice_answer,
                        source=s.source or "item", format="letter", item=s.id)
        return Turn(user=with_instruction(question, "word"), assistant=s.short_answer, source=s.source or "item",
                    format="word", item=s.id)
    if s.short_answer and len(s.short_answer.split()) <= 3:
        return Turn(user=with_instruction(question, "word"), assistant=s.short_answer, source=s.source or "item",
                    format="word", item=s.id)
    return Turn(user=with_instruction(question, "sentence"), assistant=s.answer, source=s.source or "item",
                format="sentence", item=s.id)


def pool_turns(pool: Iterable[ImageAnnotation], kinds: Iterable[str] = ("caption", "region", "grounding", "existence"),
               seed: int = 0) -> list[tuple[str, Turn]]:
    """(image, turn) for what the pool's annotations say: `caption` the first caption (sentence);
    `region` what is in each region's box (word: its phrase); `grounding` where each region's phrase
    is (box, 0-1); `existence` POPE's random split, one object that is there and one that is not
    (word: yes / no); `followup` a chain whose later turns refer back to the first ("Which shape is
    above the red box?", then "What colour is it?", "Where is it?", "What size is it?"; the dialog
    benchmark's generator, `dialog.benchmark.dialog_for`, on pool images), each later turn marked
    as following the first (`Turn.follows`). Item ids name the image and what the turn is about."""
    from ..benchmarks.pope import build_pope
    kinds = [POOL_KINDS.get(k) for k in kinds]
    pool = list(pool)
    out: list[tuple[str, Turn]] = []
    for ann in pool:
        w, h = ann.width or 1, ann.height or 1
        if "caption" in kinds and ann.captions:
            out.append((ann.image, Turn(user=with_instruction(CAPTION_Q, "sentence"), assistant=ann.captions[0],
                                        source="caption", format="sentence", item=f"{ann.image_id}-caption",
                                        annotation=True)))
        # a phrase that names two regions has no one box: only the phrases that single one out
        phrases = [r.phrase for r in ann.regions]
        for k, r in enumerate(ann.regions):
            box = format_box(r.bbox, w, h)
            if "region" in kinds and len(r.phrase.split()) <= 3:
                out.append((ann.image, Turn(user=with_instruction(f"What is in the region {box}?", "word"), assistant=r.phrase,
                                            source="region", format="word", item=f"{ann.image_id}-region-{k}",
                                            annotation=True)))
            if "grounding" in kinds and phrases.count(r.phrase) == 1:
                out.append((ann.image, Turn(user=with_instruction(f"Where is the {r.phrase}?", "box"), assistant=box,
                                            source="grounding", format="box", item=f"{ann.image_id}-grounding-{k}",
                                            annotation=True)))
    if "followup" in kinds:
        out += _followups(pool, seed)
    if "existence" in kinds:
        for p in build_pope(pool, "random", per_image=1, seed=seed):
            out.append((p.image, Turn(user=with_instruction(p.text, "word"), assistant=p.label, source="existence",
                                      format="word", item=f"pope-{p.image}-{p.text}", annotation=True)))
    return out


def _followups(pool: list[ImageAnnotation], seed: int) -> list[tuple[str, Turn]]:
    """The `followup` turns: per image that has one, a dialog's chain, its first turn the one the
    others refer back to. Turns that do not refer back (the dialog's yes/no) are left out: they
    are the `existence` kind's."""
    from .benchmark import dialog_for
    out: list[tuple[str, Turn]] = []
    for ann in pool:
        d = dialog_for(ann, random.Random(f"{seed}-followup-{ann.image_id}"))
        if d is None:
            continue
        first = f"{ann.image_id}-followup-0"
        for k, t in enumerate(d.turns):
            if k and t.refers_to is None:
                continue
            out.append((ann.image, Turn(user=t.question, assistant=t.answer, source="followup", format=t.format,
                                        item=f"{ann.image_id}-followup-{k}", annotation=True, follows=first if k else None)))
    return out


def _blocks(ts: list[Turn]) -> list[list[Turn]]:
    """The turns grouped so that a turn follows, in its block, the turn it refers back to (`follows`),
    in the order given; every other turn a block of its own. DataError for a turn that follows an
    item the image has no turn of, or one given later."""
    blocks: list[list[Turn]] = []
    block_of: dict[str, list[Turn]] = {}
    for t in ts:
        if t.follows is None:
            blocks.append(block := [t])
        elif t.follows in block_of:
            (block := block_of[t.follows]).append(t)
        else:
            raise DataError(f"item {t.item}: follows item {t.follows}, which is not an earlier turn on its image")
        block_of[t.item] = block
    return blocks


def merge(turns: Iterable[tuple[str, Turn]], max_turns: int = 8, seed: int = 0,
          refuse: Callable[[str, str], str | None] | None = None, lead: str = "any") -> list[Conversation]:
    """Conversations from (image, turn) pairs: per image, its turns shuffled (seeded by the image) and
    cut into ceil(n / max_turns) conversations of near-equal length. A turn that refers back to
    another (`Turn.follows`) stays after it in the same conversation: such a chain is shuffled and
    cut as one block (a conversation grows past its share to hold one, never past `max_turns` unless
    the chain itself is longer). `lead="item"` opens each
    conversation with an item's turn (not the pool's) while the image has one left, the rest in
    the shuffled order (LEADS). `refuse(image, item)` says why an
    item may not be trained on (a benchmark image), None when it may: DataError naming the item.
    DataError too for an item id given twice. Conversations come in the order their images first appear."""
    if max_turns < 1:
        raise DataError(f"max_turns is {max_turns}: a conversation needs at least one turn")
    lead = LEADS.get(lead)
    by_image: dict[str, list[Turn]] = {}
    ids: set[str] = set()
    for image, t in turns:
        if t.item in ids:
            raise DataError(f"item {t.item}: given twice; every item becomes exactly one turn")
        ids.add(t.item)
        if refuse and (why := refuse(image, t.item)):
            raise DataError(f"item {t.item}: {why} ({image}): never merged into training conversations")
        by_image.setdefault(image, []).append(t)
    out = []
    for image, ts in by_image.items():
        blocks = _blocks(ts)
        random.Random(f"{seed}-{image}").shuffle(blocks)
        total = sum(map(len, blocks))
        n = math.ceil(total / max_turns)
        size, extra = divmod(total, n)
        openers = [b for b in blocks if not b[0].annotation][:n] if lead == "item" else []
        opened = {b[0].item for b in openers}
        rest = [b for b in blocks if b[0].item not in opened]
        convs: list[list[Turn]] = []
        for k in range(n):
            turns_k = list(openers[k]) if k < len(openers) else []
            while rest and len(turns_k) < size + (k < extra) and (not turns_k or len(turns_k) + len(rest[0]) <= max_turns):
                turns_k += rest.pop(0)
            convs.append(turns_k)
        while rest:  # what chains pushed past the near-equal shares
            turns_k = rest.pop(0)
            while rest and len(turns_k) + len(rest[0]) <= max_turns:
                turns_k += rest.pop(0)
            convs.append(turns_k)
        out += [Conversation(id=f"{image}#{k}", image=image, turns=c) for k, c in enumerate(c for c in convs if c)]
    return out


def single(turns: Iterable[tuple[str, Turn]]) -> list[Conversation]:
    """Each turn a conversation of its own (the single-turn arm of `bench/dialog.py`); a turn that
    referred back to another stands alone, so it no longer `follows` it."""
    return [Conversation(id=t.item, image=image, turns=[t.model_copy(update={"follows": None})]) for image, t in turns]


def items_of(conversations: Iterable[Conversation]) -> list[str]:
    """The item ids the conversations were made from, one per turn, in order."""
    return [t.item for c in conversations for t in c.turns]


def merge_items(samples: Iterable[Sample], pool: Iterable[ImageAnnotation] = (), pool_kinds: Iterable[str] = (),
                max_turns: int = 8, form: str = "mixed", seed: int = 0,
                refuse: Callable[[str, str], str | None] | None = None, lead: str = "any") -> list[Conversation]:
    """`merge` of the items (`sample_turn`) and, for the images of `pool`, the turns `pool_kinds`
    names (`pool_turns`)."""
    turns = [(s.image, sample_turn(s, form)) for s in samples]
    if pool_kinds:
        turns += pool_turns(pool, pool_kinds, seed=seed)
    return merge(turns, max_turns=max_turns, seed=seed, refuse=refuse, lead=lead)
