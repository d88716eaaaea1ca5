"""A synthetic visual world whose every image comes with an exact annotation.

Scenes are drawn with PIL from a seed: a setting (the background), 1-4 shapes with a colour and a
size, sometimes a designed pair of shapes in contact, sometimes a sign with a word. The annotation
uses the same record as real pools (objects with boxes and attributes, relations, region phrases,
OCR text, captions), so the loop never knows which kind of pool it is given.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..qtypes.geometry import CONTACTS, contact, direction, overlap
from ..qtypes.vocabulary import Vocabulary
from ..records import ImageAnnotation, ObjectAnn, Region, Relation, TextAnn

SETTINGS = ["beach", "forest", "night sky", "snowy field", "ocean", "city street"]
# Small vocabularies keep the tiny model's learning within minutes on a CPU.
COLORS = {
    "red": (220, 30, 30), "blue": (40, 70, 230), "yellow": (245, 225, 30), "purple": (150, 40, 190),
    "white": (250, 250, 250), "black": (10, 10, 10),
}
CATEGORIES = ["ball", "box", "pyramid", "star", "ring", "cross"]
SIZES = {"small": 9, "large": 17}  # half extent in pixels at 96 px (scaled with the image)
WORDS = ["STOP", "OPEN", "EXIT", "SALE", "PARK", "TAXI"]
# Shapes that go together, as a fork goes with a knife in COCO: with `cooccurrence` p, a scene's next
# shape is, with probability p, the partner of one it already holds. A model that learns these
# priors from descriptions will name a partner that is not there (HA-DPO's hallucinations).
PARTNERS = {"ball": "ring", "ring": "ball", "box": "pyramid", "pyramid": "box", "star": "cross", "cross": "star"}
# The world's words, where the grounded generator draws wrong options from on the world's pool.
VOCABULARY = Vocabulary(names=tuple(CATEGORIES), colors=tuple(COLORS), settings=tuple(SETTINGS), texts=tuple(WORDS))


def _background(setting: str, size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    if setting == "beach":
        d.rectangle([0, 0, size, size * 0.4], fill=(135, 200, 240))
        d.rectangle([0, size * 0.4, size, size], fill=(225, 200, 150))
    elif setting == "forest":
        d.rectangle([0, 0, size, size], fill=(30, 85, 40))
        for _ in range(6):
            x = rng.randrange(size)
            d.rectangle([x, 0, x + 2, size], fill=(80, 55, 30))
    elif setting == "night sky":
        d.rectangle([0, 0, size, size], fill=(15, 20, 60))
        for _ in range(25):
            d.point((rng.randrange(size), rng.randrange(size)), fill=(200, 200, 160))
    elif setting == "snowy field":
        d.rectangle([0, 0, size, size], fill=(200, 215, 230))
    elif setting == "ocean":
        d.rectangle([0, 0, size, size], fill=(20, 110, 150))
        for y in range(4, size, 12):
            d.line([0, y, size, y + 3], fill=(90, 170, 200), width=1)
    elif setting == "city street":
        d.rectangle([0, 0, size, size], fill=(105, 105, 110))
        for x in range(0, size, 16):
            d.rectangle([x, size // 2 - 1, x + 8, size // 2 + 1], fill=(235, 235, 235))
    else:  # pragma: no cover - settings are a closed list
        raise ValueError(setting)
    return img


_BG_MAIN = {"beach": (225, 200, 150), "forest": (30, 85, 40), "night sky": (15, 20, 60),
            "snowy field": (200, 215, 230), "ocean": (20, 110, 150), "city street": (105, 105, 110)}


def _visible_colors(setting: str) -> list[str]:
    bg = _BG_MAIN[setting]
    return [c for c, rgb in COLORS.items() if math.dist(rgb, bg) > 120]


def _draw_shape(d: ImageDraw.ImageDraw, cat: str, box, color) -> None:
    x1, y1, x2, y2 = box
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    if cat == "ball":
        d.ellipse(box, fill=color)
    elif cat == "box":
        d.rectangle(box, fill=color)
    elif cat == "pyramid":
        d.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=color)
    elif cat == "ring":
        d.ellipse(box, outline=color, width=max(2, int(r / 2.5)))
    elif cat == "cross":
        w = r / 2.5
        d.rectangle([cx - w, y1, cx + w, y2], fill=color)
        d.rectangle([x1, cy - w, x2, cy + w], fill=color)
    elif cat == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        d.polygon(pts, fill=color)
    else:  # pragma: no cover
        raise ValueError(cat)


@dataclass
class _Obj:
    cat: str
    color: str
    size: str
    box: tuple[float, float, float, float]


def _font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def render_scene(seed: int, size: int = 96, cooccurrence: float = 0.0) -> tuple[Image.Image, dict]:
    """Draw one scene; return the image and the raw facts needed for its annotation. `cooccurrence`:
    the chance that each further shape is the partner (`PARTNERS`) of one already drawn (0: none;
    the scene of a seed is then the same as it always was)."""
    rng = random.Random(seed)
    setting = rng.choice(SETTINGS)
    colors = _visible_colors(setting)
    img = _background(setting, size, rng)
    d = ImageDraw.Draw(img)
    taken: list[tuple[float, float, float, float]] = []

    # Shapes sit at the centres of a grid of cells as large as the model's image patches: a tiny
    # vision tower trained from scratch then sees each shape at one offset and learns it in minutes.
    cell = size // 6

    def free_box(half: float, tries: int = 60):
        lo = math.ceil((half + 1 - cell / 2) / cell)
        hi = math.floor((size - half - 1 - cell / 2) / cell)
        for _ in range(tries):
            cx = rng.randint(lo, hi) * cell + cell / 2
            cy = rng.randint(lo, hi) * cell + cell / 2
            box = (cx - half, cy - half, cx + half, cy + half)
            if not any(overlap(box, t, gap=6) for t in taken):
                return box
        return None

    texts = []
    if rng.random() < 0.3:
        word = rng.choice(WORDS)
        w, h = 3 * cell, 3 * cell // 2
        for _ in range(60):
            x, y = rng.randrange(0, size - w + 1, cell), rng.randrange(0, size - h + 1, cell)
            box = (x, y, x + w - 1, y + h - 1)
            if not any(overlap(box, t, gap=6) for t in taken):
                d.rectangle(box, fill=(250, 250, 250), outline=(0, 0, 0))
                d.text((x + w / 2, y + h / 2), word, fill=(0, 0, 0), font=_font(round(cell * 0.95)), anchor="mm")
                taken.append(box)
                texts.append(TextAnn(text=word, bbox=box))
                break

    objs: list[_Obj] = []
    n = rng.choice([1, 2, 2, 3, 3, 4])
    repeat, copies = None, 0
    if rng.random() < 0.5:  # several shapes of one kind, so that counting has answers past "one"
        repeat, copies = rng.choice(CATEGORIES), rng.choice([2, 3, 4])
        n = max(n, copies)
    pair = rng.choice(CONTACTS) if n >= 2 and rng.random() < 0.45 else None
    if pair:
        # A designed pair: the outer shape is large, the inner one small, so "inside" can be drawn.
        outer = _Obj(rng.choice(["box", "ball"]) if pair == "inside" else rng.choice(CATEGORIES),
                     rng.choice(colors), "large", (0, 0, 0, 0))
        inner_colors = [c for c in colors if c != outer.color]
        inner = _Obj(rng.choice(CATEGORIES), rng.choice(inner_colors), "small", (0, 0, 0, 0))
        big, small = SIZES["large"] * size / 96, SIZES["small"] * size / 96
        for _ in range(60):
            ob = free_box(big + small * 2 + 2)
            if ob is None:
                break
            cx, cy = (ob[0] + ob[2]) / 2, (ob[1] + ob[3]) / 2
            outer.box = (cx - big, cy - big, cx + big, cy + big)
            side = rng.choice([-1, 1])
            if pair == "inside":
                icx, icy = cx, cy
            else:
                dist = {"overlapping": big + small - small, "touching": big + small + 0.5, "apart": big + small + 16}[pair]
                if rng.random() < 0.5:
                    icx, icy = cx + side * dist, cy
                else:
                    icx, icy = cx, cy + side * dist
            inner.box = (icx - small, icy - small, icx + small, icy + small)
            if min(inner.box) < 1 or max(inner.box) > size - 1 or contact(inner.box, outer.box) != pair:
                continue
            if any(overlap(inner.box, t, gap=6) or overlap(outer.box, t, gap=6) for t in taken):
                continue
            objs += [outer, inner]
            taken += [outer.box, inner.box]
            break
    while len(objs) < n:
        partners = sorted({PARTNERS[o.cat] for o in objs} - {o.cat for o in objs} - {repeat})
        if repeat and copies > sum(o.cat == repeat for o in objs):
            cat = repeat
        elif cooccurrence and partners and rng.random() < cooccurrence:
            cat = rng.choice(partners)
        else:
            cat = rng.choice([c for c in CATEGORIES if c != repeat])
        o = _Obj(cat, rng.choice(colors), rng.choice(list(SIZES)), (0, 0, 0, 0))
        box = free_box(SIZES[o.size] * size / 96)
        if box is None:
            break
        o.box = box
        objs.append(o)
        taken.append(box)
    for o in objs:  # in list order, so the inner shape of a pair is drawn on top of the outer one
        _draw_shape(d, o.cat, o.box, COLORS[o.color])
    return img, {"setting": setting, "objects": objs, "texts": texts}


def _caption(setting: str, objs: list[_Obj], texts: list[TextAnn]) -> str:
    parts = [f"a {o.size} {o.color} {o.cat}" for o in objs]
    things = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else "nothing"
    place = {"beach": "on a beach", "forest": "in a forest", "night sky": "under a night sky",
             "snowy field": "in a snowy field", "ocean": "on the ocean", "city street": "on a city street"}[setting]
    cap = f"{things[0].upper()}{things[1:]} {place}."
    if texts:
        cap += f' A sign reads "{texts[0].text}".'
    return cap


def annotate(image_id: str, image_path: str, facts: dict, size: int = 96) -> ImageAnnotation:
    objs: list[_Obj] = facts["objects"]
    objects = [ObjectAnn(id=i, name=o.cat, bbox=tuple(round(v, 2) for v in o.box), attributes=[o.color, o.size])
               for i, o in enumerate(objs)]
    relations = []
    for a in objects:
        for b in objects:
            if a.id == b.id:
                continue
            rel = direction(a.bbox, b.bbox)
            if rel:
                relations.append(Relation(subject=a.id, predicate=rel, object=b.id))
            c = contact(a.bbox, b.bbox)
            if c != "near":
                relations.append(Relation(subject=a.id, predicate=c, object=b.id))
    regions = [Region(bbox=o.bbox, phrase=f"{o.attributes[1]} {o.attributes[0]} {o.name}") for o in objects]
    return ImageAnnotation(
        image_id=image_id, image=image_path, width=size, height=size, setting=facts["setting"],
        captions=[_caption(facts["setting"], objs, facts["texts"])], objects=objects,
        relations=relations, regions=regions, texts=facts["texts"],
    )


def object_mask(ann: ImageAnnotation):
    """Which object each pixel shows (object id + 1; 0: none), redrawn from the annotation when its
    shapes are the world's; None otherwise. Vision pretraining labels patches by it."""
    import numpy as np
    if not ann.objects or any(o.name not in CATEGORIES for o in ann.objects) or len(ann.objects) > 250:
        return None
    img = Image.new("L", (ann.width, ann.height), 0)
    d = ImageDraw.Draw(img)
    for o in ann.objects:  # in list order, as the world draws them
        _draw_shape(d, o.name, o.bbox, o.id + 1)
    return np.asarray(img)


def build_pool(image_root: Path, prefix: str, seeds: range, size: int = 96, cooccurrence: float = 0.0) -> list[ImageAnnotation]:
    """Render and save images for the given seeds; return their annotations (images already on disk are kept)."""
    out = []
    folder = Path(image_root) / prefix
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        rel = f"{prefix}/{prefix}_{seed:06d}.png"
        img, facts = render_scene(seed, size, cooccurrence)
        target = Path(image_root) / rel
        if not target.exists():  # written aside and renamed: a kill never leaves a cut picture
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp.png")
            img.save(tmp)
            os.replace(tmp, target)
        out.append(annotate(f"{prefix}_{seed:06d}", rel, facts, size))
    return out
