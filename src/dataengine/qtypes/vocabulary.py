"""Words the question types use: colours and sizes read from attributes, plurals, the phrases that
name one object ("the small red ball"), and a pool's `Vocabulary` of names, colours, places and
written words, from which wrong options are drawn."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from ..records import ImageAnnotation, ObjectAnn

# Colour words read from attributes: the synthetic world's six first, then what real pools use.
COLOR_WORDS = ["red", "blue", "yellow", "purple", "white", "black",
               "green", "orange", "pink", "brown", "gray", "grey", "silver", "gold", "tan", "beige"]
SIZE_WORDS = ("small", "large")

_IRREGULAR = {"man": "men", "woman": "women", "person": "people", "child": "children", "foot": "feet",
              "tooth": "teeth", "mouse": "mice", "goose": "geese", "sheep": "sheep", "deer": "deer", "fish": "fish",
              "knife": "knives", "leaf": "leaves", "shelf": "shelves", "wolf": "wolves", "scarf": "scarves"}


def plural(name: str) -> str:
    """English plural of an object name ("box" -> "boxes", "man" -> "men", "traffic light" -> "traffic lights")."""
    head, _, last = name.rpartition(" ")
    lower = last.lower()
    if lower in _IRREGULAR:
        word = _IRREGULAR[lower]
    elif re.search(r"(s|x|z|ch|sh)$", lower):
        word = last + "es"
    elif re.search(r"[^aeiou]y$", lower):
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def color_of(attrs: list[str]) -> str | None:
    return next((a for a in attrs if a in COLOR_WORDS), None)


def size_of(attrs: list[str]) -> str | None:
    return next((a for a in attrs if a in SIZE_WORDS), None)


def others(vocab, answer: str) -> list[str]:
    """The vocabulary without the answer, in its order: wrong options."""
    return [v for v in vocab if v != answer]


@dataclass(frozen=True)
class Vocabulary:
    """Where wrong options come from: object names, colours, kinds of place (settings) and written
    words (OCR). `from_pool` takes a pool's own, so an absent-object option is a thing that pool
    actually shows; the synthetic world has its own (`world.VOCABULARY`)."""
    names: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()

    @classmethod
    def from_pool(cls, pool: list[ImageAnnotation], top: int = 300, base: "Vocabulary | None" = None) -> "Vocabulary":
        """The pool's most frequent names, colours, places and words (`top` of each). A pool whose
        object names all lie in `base` (a synthetic world's pool) gets `base` itself, so its items
        keep the world's order of options."""
        from .scene import PLACES, setting_of
        rank = lambda c: tuple(n for n, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))[:top]  # noqa: E731
        names = Counter(o.name for a in pool for o in a.objects)
        if base is not None and set(names) <= set(base.names):
            return base
        colors = Counter(c for a in pool for o in a.objects if (c := color_of(o.attributes)))
        settings = Counter(s for a in pool if (s := setting_of(a)))
        texts = Counter(t.text for a in pool for t in a.texts)
        # a colour or place question needs three wrong answers even where the pool shows few
        shown = [c for c, _ in colors.most_common()]
        places = rank(settings)
        return cls(rank(names), tuple(shown + [c for c in COLOR_WORDS if c not in shown and c != "grey"]),
                   places + tuple(p for p in PLACES if p not in places), rank(texts))


def referring_expressions(ann: ImageAnnotation) -> dict[int, str]:
    """The shortest phrase naming each object uniquely ("the red ball", "the small red ball"); objects
    that no such phrase singles out are left out."""
    keys = {o.id: (size_of(o.attributes), color_of(o.attributes), o.name) for o in ann.objects}
    refs = {}
    for o in ann.objects:
        size, color, name = keys[o.id]
        if color and sum(1 for k in keys.values() if k[1:] == (color, name)) == 1:
            refs[o.id] = f"the {color} {name}"
        elif color and size and sum(1 for k in keys.values() if k == (size, color, name)) == 1:
            refs[o.id] = f"the {size} {color} {name}"
    return refs


_REF = re.compile(r"the (?:(small|large) )?(?:(\w+) )?(\w+)")


def find_references(ann: ImageAnnotation, text: str, names: set[str]) -> list[list[ObjectAnn]]:
    """For each "the [size] [color] name" phrase of the text whose name is in `names`, in order, the
    objects of the annotation it can refer to (an empty list: it names nothing in the image)."""
    names = {o.name for o in ann.objects} | names
    found = []
    for m in _REF.finditer(text.lower()):
        size, color, name = m.groups()
        if name not in names and color in names:  # "the ring relative to ...": the name came one word early
            color, name = None, color
        if name not in names:
            continue
        found.append([o for o in ann.objects if o.name == name and (not color or color_of(o.attributes) == color)
                      and (not size or size_of(o.attributes) == size)])
    return found


def the_one(groups: list[list[ObjectAnn]], k: int) -> ObjectAnn | None:
    """The k-th phrase's object, when it names exactly one."""
    return groups[k][0] if len(groups) > k and len(groups[k]) == 1 else None


_NORM = re.compile(r"[^a-z0-9 ]+")


def norm(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces."""
    return " ".join(_NORM.sub(" ", text.lower()).split())


def same(a: str, b: str | None) -> bool:
    """Equal up to case, punctuation and a leading article ("A ball." == "ball")."""
    strip = lambda t: re.sub(r"^(a|an|the) ", "", norm(t or ""))  # noqa: E731
    return b is not None and strip(a) == strip(b)
