"""POPE: yes/no object-existence questions, a hallucination benchmark (Li et al., 2023).

The builder makes the three splits from any annotated pool (the synthetic world, COCO, Visual Genome):
per image, 3 objects that are there and 3 that are not, the absent ones drawn at random (`random`),
among the pool's most frequent objects (`popular`), or among those that most often appear together
with the image's own objects (`adversarial`). Files use POPE's own JSON-lines format:
{"question_id", "image", "text", "label"}.
"""
from __future__ import annotations

import random
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from ..errors import DataError
from ..images import load_image
from ..records import ImageAnnotation, read_jsonl, write_jsonl
from ..registry import Registry

# How each split draws the absent objects of an image: f(absent, present, freq, cooc, rng, k) -> k names.
SPLITS = Registry("POPE split")


@SPLITS.register("random")
def _random(absent, present, freq, cooc, rng, k):
    return rng.sample(absent, k)


@SPLITS.register("popular")
def _popular(absent, present, freq, cooc, rng, k):
    return sorted(absent, key=lambda n: (-freq[n], n))[:k]


@SPLITS.register("adversarial")
def _adversarial(absent, present, freq, cooc, rng, k):
    return sorted(absent, key=lambda n: (-sum(cooc[p, n] for p in present), n))[:k]


class PopeItem(BaseModel):
    question_id: int
    image: str
    text: str
    label: str  # "yes" or "no"
    category: str = ""  # the split, in VLMEvalKit's POPE.tsv


# Words that name the same thing as a POPE-style object (a small table, as POPE's COCO lists have):
# an image that shows a "man" shows a "person", so "person" is no absent object there.
SYNONYMS = {
    "person": ("man", "woman", "people", "boy", "girl", "child", "kid", "lady", "guy", "player", "men", "women", "persons"),
    "tv": ("television", "television set", "tv set"), "couch": ("sofa",), "bicycle": ("bike",), "motorcycle": ("motorbike",),
    "car": ("automobile",), "cell phone": ("phone", "mobile phone", "cellphone"), "airplane": ("plane", "aeroplane", "jet"),
    "dining table": ("table",), "cup": ("mug",), "laptop": ("notebook computer",),
}
_CANON = {w: k for k, ws in SYNONYMS.items() for w in (k, *ws)}


def same_thing(names) -> Callable[[str], str]:
    """A name's canonical form among `names`: its synonym group, else its singular when the pool also
    has that ("trees" -> "tree", "men" -> "person")."""
    from ..qtypes.vocabulary import plural
    singular = {plural(n): n for n in names}

    def canon(name: str) -> str:
        name = name.lower()
        name = singular.get(name, name) if singular.get(name, name) in names else name
        return _CANON.get(name, name)
    return canon


def build_pope(anns: list[ImageAnnotation], split: str, per_image: int = 3, seed: int = 0) -> list[PopeItem]:
    """POPE's questions for a pool: per image, `per_image` objects that are there (yes) and as many
    that are not (no), drawn as the split says. An absent object is never one the image shows under
    another number or a synonym, nor one the annotation may have missed (a crowd, an LVIS
    not-exhaustive category)."""
    draw = SPLITS.get(split)
    freq = Counter(n for a in anns for n in {o.name for o in a.objects})
    cooc: Counter = Counter()
    for a in anns:
        for x, y in combinations(sorted({o.name for o in a.objects}), 2):
            cooc[x, y] += 1
            cooc[y, x] += 1
    canon = same_thing(set(freq))
    vocab = list({canon(n): n for n in sorted(freq, reverse=True)}.values())[::-1]  # one name per thing
    rng = random.Random(f"{seed}-{split}")
    items: list[PopeItem] = []
    for a in anns:
        present = list({canon(n): n for n in sorted({o.name for o in a.objects}, reverse=True)}.values())[::-1]
        shown = {canon(n) for n in present} | {canon(n) for n in a.inexhaustive}
        absent = [n for n in vocab if canon(n) not in shown]
        if len(present) < per_image or len(absent) < per_image:
            continue  # as POPE does, only images with enough objects of each kind
        negatives = draw(absent, present, freq, cooc, rng, per_image)
        for name, label in [(n, "yes") for n in rng.sample(present, per_image)] + [(n, "no") for n in negatives]:
            items.append(PopeItem(question_id=len(items) + 1, image=a.image, text=f"Is there a {name} in the image?", label=label))
    return items


def write_pope(path: str | Path, items: list[PopeItem]) -> Path:
    return write_jsonl(path, items)


def read_pope(path: str | Path, image_dir: str | Path | None = None) -> list[PopeItem]:
    """POPE's JSON lines (labels "yes"/"no" in any case), or VLMEvalKit's POPE.tsv (its images are
    written to `image_dir`; its split goes to `category`)."""
    if Path(path).suffix.lower() == ".tsv":
        from .yesno import read_yes_no_tsv
        if image_dir is None:
            raise DataError(f"{path}: a TSV needs a folder for its images (--image-root)")
        return [PopeItem(question_id=i, image=x.image, text=x.question, label=x.label, category=x.category)
                for i, x in enumerate(read_yes_no_tsv(path, image_dir))]
    items = read_jsonl(path, PopeItem)
    if not items:
        raise DataError(f"{path}: no questions")
    for item in items:
        item.label = item.label.strip().lower()
        if item.label not in ("yes", "no"):
            raise DataError(f"{path}: question {item.question_id}: label {item.label!r} is not yes or no")
    return items


def pope_metrics(labels: list[str], answers: list[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio, with "yes" the positive class (as POPE reports)."""
    tp = sum(l == "yes" and a == "yes" for l, a in zip(labels, answers))
    fp = sum(l == "no" and a == "yes" for l, a in zip(labels, answers))
    fn = sum(l == "yes" and a != "yes" for l, a in zip(labels, answers))
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": sum(l == a for l, a in zip(labels, answers)) / n if n else 0.0,
        "precision": precision, "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(a == "yes" for a in answers) / n if n else 0.0,
    }


def evaluate_pope(vlm, items: list[PopeItem], image_root: str | Path, batch_size: int = 16,
                  method: str = "likelihood", rule: str = "pope", max_new_tokens: int = 32) -> list[str]:
    """Answer each yes/no question: by the likelihood of "yes" against "no" (`method` "likelihood", any
    model with `score_options`), or by a generated reply read by `rule` ("pope": POPE's own,
    "vlmevalkit": VLMEvalKit's; "generate", any model with `generate`). Returns "yes", "no" or
    (VLMEvalKit's rule) "unknown" per question."""
    from .answers import YES_NO_RULES
    read = YES_NO_RULES.get(rule)
    if method not in ("likelihood", "generate"):
        raise DataError(f"unknown yes/no method {method!r}; known: likelihood, generate")
    answers = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        images = [load_image(image_root, i.image, where=f"question {i.question_id}") for i in chunk]
        if method == "likelihood":
            scores = vlm.score_options([(img, i.text, ["yes", "no"]) for img, i in zip(images, chunk)])
            answers += ["yes" if s[0] <= s[1] else "no" for s in scores]
        else:
            answers += [read(t) for t in vlm.generate([(img, i.text) for img, i in zip(images, chunk)], max_new_tokens=max_new_tokens)]
    return answers
