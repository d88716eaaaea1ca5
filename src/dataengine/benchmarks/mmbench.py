"""MMBench: the TSV with base64 images, CircularEval, and which generator type writes each category."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from ..records import LETTERS, QTYPES, Question, is_seed_type

MMBENCH_FIELDS = ("index", "question", "A", "B", "answer", "category", "image")

# Which of the generators' SEED-Bench types (1-9) writes training items for each MMBench category.
# The categories left out (image_emotion, image_quality, image_style, future_prediction,
# social_relation, nature_relation, structuralized_imagetext_understanding) have no such type.
MMBENCH_TYPES: dict[str, int] = {
    "image_scene": 1, "image_topic": 1,
    "celebrity_recognition": 2, "identity_reasoning": 2,
    "attribute_recognition": 3, "attribute_comparison": 3,
    "object_localization": 4,
    "spatial_relationship": 6,
    "physical_relation": 7, "action_recognition": 7,
    "function_reasoning": 8, "physical_property_reasoning": 8,
    "ocr": 9,
}


def is_mmbench(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".tsv"


def generator_types(names: dict[int, str], type_map: dict[str, int] | None = None) -> dict[int, int | None]:
    """For each benchmark type (number -> name), the generator type that writes its items: a category
    named in `type_map` (the user's, first) or in MMBENCH_TYPES, else a SEED-Bench type itself; None
    when no generator can write it."""
    table = MMBENCH_TYPES | (type_map or {})
    for name, t in (type_map or {}).items():
        if t not in QTYPES:
            raise DataError(f"generate.type_map: category {name!r} maps to {t!r}; the generators write SEED-Bench types 1-9")
    out: dict[int, int | None] = {}
    for t, name in names.items():
        out[t] = table[name] if name in table else t if is_seed_type(t, name) else None
    return out


def _image_ext(data: bytes) -> str:
    return ".png" if data.startswith(b"\x89PNG") else ".jpg" if data.startswith(b"\xff\xd8") else ".img"


def read_mmbench(path: str | Path, image_dir: str | Path) -> list[Question]:
    """Read an MMBench TSV (index, question, hint, A-D, answer, category, l2-category, image as base64).
    Images are written once into `image_dir` (the image root for evaluation); a row whose image is
    the index of another row reuses that row's picture, as the official files do. Categories become
    the question types (numbered in sorted order; their names carry through to the results)."""
    import base64
    import binascii
    import csv
    import sys
    path, image_dir = Path(path), Path(image_dir)
    if not path.exists():
        raise DataError(f"{path}: benchmark file not found")
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise DataError(f"{path}: no rows")
    missing = [c for c in MMBENCH_FIELDS if c not in rows[0]]
    if missing:
        hint = " (the test split has no answers; score it on the MMBench server)" if missing == ["answer"] else ""
        raise DataError(f"{path}: missing column {missing[0]!r}{hint}")
    for n, r in enumerate(rows):
        short = [c for c in MMBENCH_FIELDS if r.get(c) is None]  # csv gives None for a row cut short
        if short:
            raise DataError(f"{path}: question {r.get('index') or f'#{n}'}: missing field {short[0]!r}")
    cats = {c: i + 1 for i, c in enumerate(sorted({r["category"] for r in rows}))}
    image_dir.mkdir(parents=True, exist_ok=True)
    by_index: dict[str, str] = {}
    out = []
    for r in rows:
        idx, where = r["index"], f"{path}: question {r['index']}"
        img = r["image"].strip()
        if img.isdigit() and len(img) < 16:  # a reference to another row's image
            if img not in by_index:
                raise DataError(f"{where}: image refers to row {img}, which has no image before it")
            rel = by_index[img]
        else:
            try:
                data = base64.b64decode(img, validate=True)
            except (binascii.Error, ValueError):
                raise DataError(f"{where}: image is not base64") from None
            rel = f"{idx}{_image_ext(data)}"
            if not (image_dir / rel).exists():
                # Atomic, so an image cut short by a killed run is never taken as extracted.
                tmp = image_dir / f"{rel}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, image_dir / rel)
        by_index[idx] = rel
        options = [r[k].strip() for k in "ABCD" if r.get(k) is not None and r[k].strip() not in ("", "nan")]
        answer = r["answer"].strip().upper()
        if answer not in LETTERS[:len(options)]:
            raise DataError(f"{where}: answer {r['answer']!r} is not one of its {len(options)} options")
        hint = (r.get("hint") or "").strip()
        question = f"{hint}\n{r['question'].strip()}" if hint and hint != "nan" else r["question"].strip()
        out.append(Question(question_id=idx, question=question, options=options, answer=answer,
                            qtype=cats[r["category"]], image=rel, category=r["category"],
                            l2_category=(r.get("l2-category") or r.get("l2_category") or None)))
    return out


def circular(questions: list[Question]) -> list[Question]:
    """CircularEval: each question once per rotation of its options (ids `<id>@<k>`, rotation 0 first)."""
    out = []
    for q in questions:
        n = len(q.options)
        right = LETTERS.index(q.answer)
        for k in range(n):
            out.append(q.model_copy(update={"question_id": f"{q.question_id}@{k}", "options": q.options[k:] + q.options[:k],
                                            "answer": LETTERS[(right - k) % n]}))
    return out


def circular_scores(preds) -> dict:
    """Single pass (rotation 0) and circular (every rotation right) accuracy, overall, per category
    and per l2-category, from the predictions of `circular(questions)`."""
    groups: dict[str, list] = {}
    for p in preds:
        groups.setdefault(p.question_id.rsplit("@", 1)[0], []).append(p)

    def acc(keys):
        n = len(keys)
        single = sum(next(p for p in groups[k] if p.question_id.endswith("@0")).correct for k in keys)
        circ = sum(all(p.correct for p in groups[k]) for k in keys)
        return {"questions": n, "single": single / n if n else 0.0, "circular": circ / n if n else 0.0}

    def by(field):
        names: dict[str, list[str]] = {}
        for k, ps in groups.items():
            names.setdefault(getattr(ps[0], field) or "-", []).append(k)
        return {name: acc(keys) for name, keys in sorted(names.items())}

    return {"overall": acc(list(groups)), "category": by("category"), "l2_category": by("l2_category")}
