"""Filter: keep only well-formed, correct, new items; never let a benchmark image into training data.

Each check returns a reason or None (`verify` also "" for confirmed). `verify` re-derives the answer from the annotation on its own
(it does not call the generator), so it also judges items written by an LLM.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from .generate import DIRECTIONS, HEAVIEST_Q, QUADRANTS, color_of, size_of
from .embed import item_text, near_duplicates
from .images import resolve
from .records import LETTERS, QTYPES, ImageAnnotation, ObjectAnn, Question, Sample
from .world import CATEGORIES, COLORS, CONTACTS, NUMBERS, PLURALS, contact, direction, quadrant

_NORM = re.compile(r"[^a-z0-9 ]+")


def norm(text: str) -> str:
    return " ".join(_NORM.sub(" ", text.lower()).split())


def check_format(s: Sample) -> str | None:
    if not s.instruction.strip() or not s.answer.strip() or not s.short_answer.strip():
        return "empty field"
    if s.qtype not in QTYPES:
        return "unknown question type"
    if len(s.options) != 4 or any(not o.strip() for o in s.options):
        return "not 4 options"
    if len({norm(o) for o in s.options}) != 4:
        return "options not distinct"
    if s.choice_answer not in LETTERS:
        return "answer letter not A-D"
    if norm(s.options[LETTERS.index(s.choice_answer)]) != norm(s.short_answer):
        return "answer not among options"
    return None


def check_leak(s: Sample) -> str | None:
    """The question must not give its own answer away."""
    if re.search(rf"\b{re.escape(norm(s.short_answer))}\b", norm(s.instruction)):
        return "question leaks the answer"
    return None


# ---- verification against the annotation ----

_REF = re.compile(r"the (?:(small|large) )?(?:(\w+) )?(\w+)")


def _find(ann: ImageAnnotation, text: str) -> list[list[ObjectAnn]]:
    """The objects each "the [size] [color] name" phrase of the text can refer to, in order."""
    names = {o.name for o in ann.objects} | set(CATEGORIES)
    found = []
    for size, color, name in _REF.findall(text.lower()):
        if name not in names:
            continue
        found.append([o for o in ann.objects if o.name == name and (not color or color_of(o.attributes) == color)
                      and (not size or size_of(o.attributes) == size)])
    return found


def _one(groups: list[list[ObjectAnn]], k: int) -> ObjectAnn | None:
    return groups[k][0] if len(groups) > k and len(groups[k]) == 1 else None


def _same(a: str, b: str | None) -> bool:
    """Equal up to case, punctuation and a leading article ("A ball." == "ball")."""
    strip = lambda t: re.sub(r"^(a|an|the) ", "", norm(t or ""))
    return b is not None and strip(a) == strip(b)


def verify(s: Sample, ann: ImageAnnotation) -> str | None:
    """Judge an item against the annotation: a reason if the annotation contradicts it, "" if the
    annotation confirms it, None if the annotation cannot decide."""
    q, a, opts = s.instruction, s.short_answer, s.options
    objs = ann.objects
    if s.qtype == 1 and ann.setting and "place" in q.lower():
        return "" if _same(a, ann.setting) else f"the place is {ann.setting}"
    if s.qtype == 2:
        m = re.search(r"what is the (\w+) object", q.lower())
        if m:
            match = [o for o in objs if color_of(o.attributes) == m.group(1)]
            if len(match) != 1:
                return f"no single {m.group(1)} object"
            return "" if _same(a, match[0].name) else f"the {m.group(1)} object is a {match[0].name}"
        if "can be seen" in q.lower():
            present = {o.name for o in objs}
            if not any(_same(a, n) for n in present):
                return f"no {a} in the image"
            if any(_same(o, n) for o in opts if not _same(o, a) for n in present):
                return "a distractor is also in the image"
            return ""
        return None
    groups = _find(ann, q)
    if s.qtype == 3:
        o = _one(groups, 0)
        if groups and not groups[0]:
            return "refers to an object not in the image"
        if o is None or not ("color" in q.lower() or any(_same(a, c) for c in COLORS)):
            return None
        return "" if _same(a, color_of(o.attributes)) else f"it is {color_of(o.attributes)}"
    if s.qtype == 4:
        o = _one(groups, 0)
        where = quadrant(o.bbox, ann.width, ann.height) if o else None
        if where is None or not any(_same(a, x) for x in QUADRANTS):
            return None
        return "" if _same(a, where) else f"it is in the {where}"
    if s.qtype == 5:
        m = re.search(r"how many (\w+)", q.lower())
        k_said = next((i + 1 for i, w in enumerate(NUMBERS) if _same(a, w) or norm(a) == str(i + 1)), None)
        if m and k_said:
            word = m.group(1)
            name = next((n for n in {o.name for o in objs} | set(CATEGORIES) if word in (n, PLURALS.get(n, n + "s"))), None)
            if name:
                k = sum(o.name == name for o in objs)
                return "" if k_said == k else f"there are {k}"
        return None
    if s.qtype in (6, 7):
        x, y = _one(groups, 0), _one(groups, 1)
        if len(groups) >= 2 and (not groups[0] or not groups[1]):
            return "refers to an object not in the image"
        if x is None or y is None:
            return None
        if s.qtype == 6:
            d = direction(x.bbox, y.bbox)
            truth = DIRECTIONS.get(d) if d else None
            said = next((v for v in DIRECTIONS.values() if _same(a, v) or _same(a, v.replace("to the ", ""))), None)
            if truth is None or said is None:
                return None
            return "" if said == truth else f"it is {truth}"
        c = contact(x.bbox, y.bbox)
        if c == "near" or not any(_same(a, k) for k in CONTACTS):
            return None
        return "" if _same(a, c) else f"they are {c}"
    if s.qtype == 8 and q == HEAVIEST_Q:
        large = [o for o in objs if size_of(o.attributes) == "large"]
        return "" if len(large) == 1 and _same(a, large[0].name) else "not the single largest object"
    if s.qtype == 9:
        texts = {t.text for t in ann.texts}
        if not texts:
            return None  # real pools often have no OCR: no text annotated is not no text
        return "" if any(_same(a, t) for t in texts) else f"the text reads {sorted(texts)}"
    return None


# ---- the filter stage ----

class FilterReport(BaseModel):
    kept: int
    dropped: dict[str, int]  # reason -> count
    dropped_by_type: dict[int, dict[str, int]]


def file_hash(path: Path) -> str | None:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.exists() else None


class BenchmarkGuard:
    """Knows the benchmark's images (by file and by content) and questions, to keep them out of training.

    Benchmark images live under `benchmark_image_root` (default: `image_root`), training images under
    `image_root`. Files are compared as resolved paths, not as names: the same name under two roots
    may be two pictures. A copy under any name is caught by its content."""

    def __init__(self, questions: list[Question], image_root: str | Path, benchmark_image_root: str | Path | None = None):
        self.image_root = image_root
        bench_root = image_root if benchmark_image_root is None else benchmark_image_root
        self.paths = {resolve(bench_root, q.image, where=f"benchmark question {q.question_id}") for q in questions}
        self.hashes = {h for h in map(file_hash, self.paths) if h}
        self.texts = [item_text(q.question, q.options, q.options[LETTERS.index(q.answer)]) for q in questions
                      if q.answer in LETTERS[:len(q.options)]]
        self._cache: dict[str, str | None] = {}

    def leaks(self, s: Sample) -> str | None:
        path = resolve(self.image_root, s.image, where=f"sample {s.id}")
        if path in self.paths:
            return "benchmark item"
        if s.image not in self._cache:
            self._cache[s.image] = file_hash(path)
        return "benchmark image" if self._cache[s.image] in self.hashes else None


def filter_samples(samples: list[Sample], guard: BenchmarkGuard | None = None,
                   annotations: dict[str, ImageAnnotation] | None = None,
                   seen: list[Sample] | None = None, embedder=None, similarity: float = 0.9,
                   scope: str = "image", drop_unverified: bool = False) -> tuple[list[Sample], list[tuple[Sample, str]], FilterReport]:
    """Split samples into kept and (dropped, reason). `seen` are items already in the training data.
    With an embedder, near-duplicates (question and answer, cosine >= similarity) are dropped too:
    among items of the same image (scope "image"), or among all items and against the benchmark's
    questions (scope "global"). `drop_unverified` also drops items the annotation can neither confirm
    nor contradict: right for an LLM writing about a pool whose annotation is complete."""
    keys = {(s.image, norm(s.instruction)) for s in (seen or [])}
    kept, dropped = [], []
    for s in samples:
        reason = check_format(s) or check_leak(s) or (guard.leaks(s) if guard else None)
        if not reason and annotations and s.image in annotations:
            bad = verify(s, annotations[s.image])
            reason = f"contradicts annotation: {bad}" if bad else None
            if bad is None and drop_unverified:
                reason = "cannot be verified against the annotation"
        key = (s.image, norm(s.instruction))
        if not reason and key in keys:
            reason = "duplicate"
        if reason:
            dropped.append((s, reason))
        else:
            keys.add(key)
            kept.append(s)
    if embedder is not None and kept:
        texts = [item_text(s.instruction, s.options, s.short_answer) for s in kept]
        near = near_duplicates(texts, embedder, similarity, against=guard.texts if guard and scope == "global" else None,
                               groups=[s.image for s in kept] if scope == "image" else None)
        dropped += [(kept[i], r) for i, r in sorted(near.items())]
        kept = [s for i, s in enumerate(kept) if i not in near]
    by_reason = Counter(r.split(":")[0] for _, r in dropped)
    by_type: dict[int, Counter] = {}
    for s, r in dropped:
        by_type.setdefault(s.qtype, Counter())[r.split(":")[0]] += 1
    report = FilterReport(kept=len(kept), dropped=dict(by_reason), dropped_by_type={t: dict(c) for t, c in by_type.items()})
    return kept, dropped, report
