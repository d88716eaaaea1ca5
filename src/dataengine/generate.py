"""Generate: turn image annotations into question / answer / 4 options / letter for a question type.

A generator is anything with `generate_batch(qtype, annotations, examples, rng) -> list[Sample]`
(at most one item an image). The grounded generator writes items straight from the annotation
(exact by construction, no LLM); the LLM generator asks an OpenAI-compatible server, all images of a
batch at once.
"""
from __future__ import annotations

import base64
import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from rich.progress import Progress

from .images import resolve
from .records import LETTERS, ImageAnnotation, Prediction, Sample
from .world import CATEGORIES, COLORS, CONTACTS, NUMBERS, SETTINGS, SIZES, WORDS, contact, direction, plural, quadrant

QUADRANTS = ["top left", "top right", "bottom left", "bottom right"]
DIRECTIONS = {"left of": "to the left", "right of": "to the right", "above": "above", "below": "below"}
HEAVIEST_Q = "If all the objects were made of the same material, which one would be the heaviest?"


class Generator(Protocol):
    name: str

    def generate_batch(self, qtype: int, anns: list[ImageAnnotation], examples: list[Prediction],
                       rng: random.Random) -> list[Sample]: ...


@dataclass
class Candidate:
    question: str
    answer: str  # a sentence
    short: str
    distractors: list[str]


# The world paints with six colours; real pools (Visual Genome attributes) use these too.
COLOR_WORDS = list(COLORS) + ["green", "orange", "pink", "brown", "gray", "grey", "silver", "gold", "tan", "beige"]


def color_of(attrs: list[str]) -> str | None:
    return next((a for a in attrs if a in COLOR_WORDS), None)


@dataclass(frozen=True)
class Vocabulary:
    """Where distractors come from: object names and colours. The synthetic world's own by default;
    `from_pool` takes a real pool's, so an absent-object option is a thing that pool actually shows."""
    names: tuple[str, ...] = tuple(CATEGORIES)
    colors: tuple[str, ...] = tuple(COLORS)

    @classmethod
    def from_pool(cls, pool: list[ImageAnnotation], top: int = 300) -> "Vocabulary":
        names = Counter(o.name for a in pool for o in a.objects)
        if set(names) <= set(CATEGORIES):
            return cls()  # the world's pool: keep the world's order, so its items stay as they were
        colors = Counter(c for a in pool for o in a.objects if (c := color_of(o.attributes)))
        ranked = [n for n, _ in sorted(names.items(), key=lambda kv: (-kv[1], kv[0]))][:top]
        # a colour question needs three wrong colours even where the pool shows few
        shown = [c for c, _ in colors.most_common()]
        return cls(tuple(ranked), tuple(shown + [c for c in COLOR_WORDS if c not in shown and c != "grey"]))


WORLD = Vocabulary()


def size_of(attrs: list[str]) -> str | None:
    return next((a for a in attrs if a in SIZES), None)


def referring_expressions(ann: ImageAnnotation) -> dict[int, str]:
    """The shortest phrase naming each object uniquely ("the red ball", "the small red ball")."""
    keys = {o.id: (size_of(o.attributes), color_of(o.attributes), o.name) for o in ann.objects}
    refs = {}
    for o in ann.objects:
        size, color, name = keys[o.id]
        if color and sum(1 for k in keys.values() if k[1:] == (color, name)) == 1:
            refs[o.id] = f"the {color} {name}"
        elif color and size and sum(1 for k in keys.values() if k == (size, color, name)) == 1:
            refs[o.id] = f"the {size} {color} {name}"
    return refs


def _others(vocab: list[str], answer: str) -> list[str]:
    return [v for v in vocab if v != answer]


def candidates(qtype: int, ann: ImageAnnotation, vocab: Vocabulary = WORLD) -> list[Candidate]:
    """Every question of this type that the annotation can answer exactly."""
    objs, refs, out = ann.objects, referring_expressions(ann), []
    names = [o.name for o in objs]
    if qtype == 1 and ann.setting:
        s = ann.setting
        out.append(Candidate("What kind of place is shown in the image?", f"The picture shows a {s}.", s, _others(SETTINGS, s)))
    elif qtype == 2:
        for o in objs:
            c = color_of(o.attributes)
            if c and sum(1 for p in objs if color_of(p.attributes) == c) == 1:
                out.append(Candidate(f"What is the {c} object in the image?", f"The {c} object is a {o.name}.",
                                     o.name, _others(list(vocab.names), o.name)))
        absent = [c for c in vocab.names if c not in names]
        if len(absent) >= 3:
            for n in sorted(set(names)):
                out.append(Candidate("Which of these objects can be seen in the image?", f"A {n} can be seen in the image.", n, absent))
    elif qtype == 3:
        for o in objs:
            c, s = color_of(o.attributes), size_of(o.attributes)
            same_name = [p for p in objs if p.name == o.name]
            if not c:
                continue
            if len(same_name) == 1:
                out.append(Candidate(f"What color is the {o.name}?", f"The {o.name} is {c}.", c, _others(list(vocab.colors), c)))
            elif s and sum(1 for p in same_name if size_of(p.attributes) == s) == 1:
                out.append(Candidate(f"What color is the {s} {o.name}?", f"The {s} {o.name} is {c}.", c, _others(list(vocab.colors), c)))
    elif qtype == 4:
        for o in objs:
            q = quadrant(o.bbox, ann.width, ann.height)
            if o.id in refs and q:
                out.append(Candidate(f"Where is {refs[o.id]} in the image?", f"It is in the {q} of the image.", q, _others(QUADRANTS, q)))
    elif qtype == 5:
        for n in sorted(set(names)):
            k = names.count(n)
            if 1 <= k <= 4:
                out.append(Candidate(f"How many {plural(n)} are there in the image?",
                                     f"There {'is' if k == 1 else 'are'} {NUMBERS[k - 1]} {n if k == 1 else plural(n)}.",
                                     NUMBERS[k - 1], _others(NUMBERS, NUMBERS[k - 1])))
    elif qtype in (6, 7):
        for a in objs:
            for b in objs:
                if a.id == b.id or a.id not in refs or b.id not in refs:
                    continue
                ra, rb = refs[a.id], refs[b.id]
                if qtype == 6 and (d := direction(a.bbox, b.bbox)):
                    s = DIRECTIONS[d]
                    out.append(Candidate(f"Where is {ra} relative to {rb}?", f"{ra.capitalize()} is {s} {'of ' + rb if 'to the' in s else rb}.",
                                         s, _others(list(DIRECTIONS.values()), s)))
                if qtype == 7 and (c := contact(a.bbox, b.bbox)) in CONTACTS:
                    if c != "inside" and contact(b.bbox, a.bbox) == "inside":
                        continue  # b sits inside a: only the (inner, outer) order is asked
                    sentence = f"{ra.capitalize()} is inside {rb}." if c == "inside" else f"{ra.capitalize()} and {rb} are {c}."
                    out.append(Candidate(f"What is the contact between {ra} and {rb}?", sentence,
                                         c, _others(CONTACTS, c)))
    elif qtype == 8:
        large = [o for o in objs if size_of(o.attributes) == "large"]
        if len(objs) >= 2 and len(large) == 1:
            n = large[0].name
            present = [p for p in dict.fromkeys(names) if p != n]
            out.append(Candidate(HEAVIEST_Q, f"The {n} is the largest, so it would be the heaviest.", n,
                                 present + [c for c in vocab.names if c not in names]))
    elif qtype == 9:
        for t in ann.texts:
            if t.text in WORDS:
                out.append(Candidate("What word is written on the sign?", f'The sign says "{t.text}".', t.text, _others(WORDS, t.text)))
    return out


def make_sample(cand: Candidate, qtype: int, ann: ImageAnnotation, rng: random.Random,
                source: str, generator: str) -> Sample:
    # Keep the hardest distractors first (for reasoning, objects that are present), then shuffle.
    pool = list(dict.fromkeys(cand.distractors))
    head = pool[:2] if qtype == 8 else []
    rest = [d for d in pool if d not in head]
    rng.shuffle(rest)
    options = [cand.short] + (head + rest)[:3]
    rng.shuffle(options)
    key = hashlib.sha1(f"{ann.image_id}|{qtype}|{cand.question}".encode()).hexdigest()[:10]
    return Sample(id=f"{source}-{qtype}-{key}", image=ann.image, instruction=cand.question, answer=cand.answer,
                  short_answer=cand.short, options=options, choice_answer=LETTERS[options.index(cand.short)],
                  qtype=qtype, source=source, generator=generator)


class GroundedGenerator:
    """Writes items from the annotation alone. Bad-case examples steer it: with probability `focus`
    it asks a question whose correct answer was among the answers the model got wrong."""

    name = "grounded"

    def __init__(self, focus: float = 0.5, source: str = "generated", vocab: Vocabulary = WORLD):
        self.focus = focus
        self.source = source
        self.vocab = vocab

    def generate(self, qtype, ann, examples, rng):
        cands = candidates(qtype, ann, self.vocab)
        if not cands:
            return []
        wanted = {_correct_text(e) for e in examples}
        focused = [c for c in cands if c.short in wanted]
        if focused and rng.random() < self.focus:
            cands = focused
        # Draw the answer first, then a question with that answer, so no answer dominates a type.
        by_answer: dict[str, list[Candidate]] = {}
        for c in cands:
            by_answer.setdefault(c.short, []).append(c)
        choice = rng.choice(by_answer[rng.choice(sorted(by_answer))])
        return [make_sample(choice, qtype, ann, rng, self.source, self.name)]

    def generate_batch(self, qtype, anns, examples, rng):
        return [s for ann in anns for s in self.generate(qtype, ann, examples, rng)[:1]]


def _correct_text(p: Prediction) -> str:
    return p.options[LETTERS.index(p.answer)]


def generate(counts: dict[int, int], pool: list[ImageAnnotation], generator: Generator,
             examples: dict[int, list[Prediction]] | None = None, seed: int = 0,
             exclude_images: dict[int, set[str]] | set[str] | None = None, oversample: int = 3,
             progress: Progress | None = None, order: dict[int, list[int]] | None = None,
             max_images: float | None = None) -> list[Sample]:
    """Generate `counts[t]` items of each type t, one per image, from images of the pool.

    Up to `oversample * counts[t]` candidates are drawn, then picked round-robin by answer, so that a
    frequent answer ("one" for counting, "apart" for contact) does not swamp a type. Use 1 for a
    generator that costs money per call. Images are taken in random order, or in `order[t]` (pool
    indices, e.g. most similar to the bad cases first); those in `exclude_images` (all types, or per
    type) are skipped; at most `max_images * counts[t]` images are tried per type (None: all).
    Returns fewer items than asked when the images run out.
    """
    examples = examples or {}
    out: list[Sample] = []
    task = progress.add_task("generate", total=sum(counts.values())) if progress else None
    for qtype, n in sorted(counts.items()):
        if n <= 0:
            continue
        exclude = exclude_images.get(qtype, set()) if isinstance(exclude_images, dict) else (exclude_images or set())
        rng = random.Random(f"{seed}-{qtype}")
        shuffled = list(range(len(pool)))
        rng.shuffle(shuffled)
        ids = [i for i in (order or {}).get(qtype, shuffled) if pool[i].image not in exclude]
        if max_images is not None:
            ids = ids[:int(max_images * n)]
        drawn: list[Sample] = []
        while ids and len(drawn) < n * oversample:
            # Ask for as many images as items are still missing: one call for the grounded
            # generator's loop, one concurrent batch for an LLM.
            batch, ids = ids[:n * oversample - len(drawn)], ids[n * oversample - len(drawn):]
            drawn.extend(generator.generate_batch(qtype, [pool[i] for i in batch], examples.get(qtype, []), rng))
        picked = balance_answers(drawn, n)
        out.extend(picked)
        if progress:
            progress.advance(task, len(picked))
    return out


def balance_answers(items: list[Sample], n: int) -> list[Sample]:
    """Pick n items taking one of each answer in turn (answers in order of first appearance)."""
    by_answer: dict[str, list[Sample]] = {}
    for s in items:
        by_answer.setdefault(s.short_answer, []).append(s)
    queues = list(by_answer.values())
    picked: list[Sample] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked


class LLMGenerator:
    """Asks an LLM for one item per image with the versioned generation prompt (`prompt.py`).

    Each request carries a seed made from the image, the type and the prompt version, so the same
    inputs make the same request and a re-run is answered from the client's cache. Options are
    shuffled after generation so the correct letter is uniform. What came back is counted per type:
    items, skips, malformed answers, failed requests.
    """

    def __init__(self, client, prompt, source: str = "generated", image_root: str | None = None):
        self.client, self.prompt, self.source, self.image_root = client, prompt, source, image_root
        self.name = f"llm:{client.cfg.model}:prompt-v{prompt.version}"
        self.outcomes: dict[int, Counter] = {}
        self.problems: list[dict] = []  # what was dropped before filtering, and why

    def _image_url(self, ann: ImageAnnotation) -> str | None:
        if not (self.client.cfg.send_image and self.image_root):
            return None
        path = resolve(self.image_root, ann.image)
        return f"data:image/{path.suffix.lstrip('.') or 'png'};base64," + base64.b64encode(path.read_bytes()).decode()

    def generate_batch(self, qtype, anns, examples, rng):
        from .llm import LLMError
        from .prompt import SCHEMA, parse
        bodies = []
        for ann in anns:
            seed = int(hashlib.sha1(f"{ann.image_id}|{qtype}|{self.prompt.version}".encode()).hexdigest()[:8], 16)
            bodies.append(self.client.body(self.prompt.messages(qtype, ann, examples, self._image_url(ann)), SCHEMA, seed=seed))
        counts = self.outcomes.setdefault(qtype, Counter())
        out = []
        for ann, answer in zip(anns, self.client.run(bodies)):
            if isinstance(answer, LLMError):
                counts["failed"] += 1
                self.problems.append({"image": ann.image, "qtype": qtype, "kind": "failed", "reason": str(answer)})
                continue
            parsed = parse(answer.text)
            counts[parsed.kind] += 1
            if parsed.kind != "item":
                self.problems.append({"image": ann.image, "qtype": qtype, "kind": parsed.kind, "reason": parsed.reason,
                                      "text": answer.text[:500]})
                continue
            it = parsed.item
            correct = it.options[LETTERS.index(it.correct)]
            options = list(it.options)
            key = hashlib.sha1(f"{ann.image_id}|{qtype}|{it.question}".encode()).hexdigest()[:10]
            random.Random(key).shuffle(options)
            out.append(Sample(id=f"{self.source}-{qtype}-{key}", image=ann.image, instruction=it.question.strip(),
                              answer=it.answer.strip(), short_answer=it.short_answer.strip(), options=options,
                              choice_answer=LETTERS[options.index(correct)], qtype=qtype, source=self.source,
                              generator=self.name))
        return out
