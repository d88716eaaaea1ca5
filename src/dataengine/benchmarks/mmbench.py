"""MMBench: the TSV with base64 images, CircularEval, and which generator type writes each category."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import DataError
from ..records import LETTERS, QTYPES, Question, read_table

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
    """For each benchmark type (number -> name), the generator type that writes its items, by name: a
    name in `type_map` (the user's, first), an MMBench category (MMBENCH_TYPES) or a SEED-Bench
    type's name; None when no generator can write it. Names decide, not numbers: files number the
    same type differently."""
    table = {name: t for t, (name, _) in QTYPES.items()} | MMBENCH_TYPES | (type_map or {})
    for name, t in (type_map or {}).items():
        if t not in QTYPES:
            raise DataError(f"generate.type_map: category {name!r} maps to {t!r}; the generators write SEED-Bench types 1-9")
    out: dict[int, int | None] = {}
    for t, name in names.items():
        out[t] = table.get(name)
    return out


def _image_ext(data: bytes) -> str:
    return ".png" if data.startswith(b"\x89PNG") else ".jpg" if data.startswith(b"\xff\xd8") else ".img"


COPY = 1_000_000  # MMBench's circular copies: index + k * COPY is rotation k of question `index`


def _decode(img: str, where: str) -> bytes:
    import base64
    import binascii
    try:
        return base64.b64decode(img, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"{where}: image is not base64") from None


def read_mmbench(path: str | Path, image_dir: str | Path) -> list[Question]:
    """Read a VLMEvalKit / MMBench multiple-choice TSV: index, question, hint, one column per option
    (A to H), answer, category, l2-category, image as base64. Images are written once into
    `image_dir` (the image root for evaluation); a row whose image is another row's index uses that
    row's picture, wherever that row is in the file. The official files carry CircularEval's copies
    already (index + k * 1,000,000, the options rotated): those rows are grouped by `index % 1e6` as
    rotation k of their question. Categories become the question types (numbered in sorted order;
    their names carry through to the results)."""
    path, image_dir = Path(path), Path(image_dir)
    if not path.exists():
        raise DataError(f"{path}: benchmark file not found")
    rows = read_table(path)
    missing = [c for c in MMBENCH_FIELDS if c not in rows[0]]
    if missing:
        hint = " (the test split has no answers; score it on the MMBench server)" if missing == ["answer"] else ""
        raise DataError(f"{path}: missing column {missing[0]!r}{hint}")
    seen: set[str] = set()
    for n, r in enumerate(rows):
        short = [c for c in MMBENCH_FIELDS if r.get(c) is None]  # csv gives None for a row cut short
        if short:
            raise DataError(f"{path}: question {r.get('index') or f'#{n}'}: missing field {short[0]!r}")
        idx = r["index"].strip()
        if not (idx.isascii() and idx.isdigit()):
            raise DataError(f"{path}: row {n + 1}: index {idx!r} is not a whole number")
        if idx in seen:
            raise DataError(f"{path}: question {idx}: the index appears twice")
        seen.add(idx)
    copies = any(int(r["index"]) >= COPY for r in rows)
    if copies:
        bases = {r["index"].strip() for r in rows if int(r["index"]) < COPY}
        orphan = next((r["index"].strip() for r in rows if str(int(r["index"]) % COPY) not in bases), None)
        if orphan:
            raise DataError(f"{path}: question {orphan}: a circular copy of question {int(orphan) % COPY}, which is not in the file")
    cats = {c: i + 1 for i, c in enumerate(sorted({r["category"] for r in rows}))}
    image_dir.mkdir(parents=True, exist_ok=True)
    # The rows that carry a picture, then those that name another row (which may name another in turn).
    refs: dict[str, str] = {}
    own: dict[str, str] = {}
    for r in rows:
        idx, img = r["index"].strip(), r["image"].strip()
        if img.isdigit() and len(img) < 16:
            refs[idx] = img
        else:
            own[idx] = _write_image(_decode(img, f"{path}: question {idx}"), idx, image_dir)

    def picture(idx: str) -> str:
        seen = [idx]
        while idx not in own:
            if idx not in refs or refs[idx] in seen:
                raise DataError(f"{path}: question {seen[0]}: image refers to row {refs.get(seen[0], idx)}, which has no image")
            idx = refs[idx]
            seen.append(idx)
        return own[idx]

    out = []
    for n, r in enumerate(rows):
        idx = r["index"].strip()
        where = f"{path}: question {idx}"
        rel = picture(idx)
        letters = [k for k in LETTERS if r.get(k) is not None and r[k].strip() not in ("", "nan")]
        if letters != list(LETTERS[:len(letters)]):
            raise DataError(f"{where}: option columns {', '.join(letters)} leave a gap")
        options = [r[k].strip() for k in letters]
        answer = r["answer"].strip().upper()
        if answer not in letters:
            raise DataError(f"{where}: answer {r['answer']!r} is not one of its {len(options)} options")
        hint = (r.get("hint") or "").strip()
        out.append(Question(question_id=idx, question=r["question"].strip(), hint="" if hint == "nan" else hint,
                            options=options, answer=answer, qtype=cats[r["category"]], image=rel, category=r["category"],
                            l2_category=(r.get("l2-category") or r.get("l2_category") or None),
                            group=str(int(idx) % COPY) if copies else "", rotation=int(idx) // COPY if copies else 0,
                            order=n))
    return out


def _write_image(data: bytes, index: str, image_dir: Path) -> str:
    """The picture of one row, written once under a name made from its content: a second file with the
    same index, or a row with another's index, never gets a picture that is not its own."""
    import hashlib
    rel = f"{index}-{hashlib.sha1(data).hexdigest()[:12]}{_image_ext(data)}"
    if not (image_dir / rel).exists():
        # Atomic, so an image cut short by a killed run is never taken as extracted.
        tmp = image_dir / f"{rel}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, image_dir / rel)
    return rel


def circular(questions: list[Question]) -> list[Question]:
    """CircularEval: each question once per rotation of its options (ids `<id>@<k>`, rotation 0
    first). A file that already holds the rotations (MMBench's copies) is returned as it is."""
    if any(q.rotation or q.group for q in questions):
        return questions
    out = []
    for q in questions:
        n = len(q.options)
        right = LETTERS.index(q.answer)
        for k in range(n):
            out.append(q.model_copy(update={"question_id": f"{q.question_id}@{k}", "options": q.options[k:] + q.options[:k],
                                            "answer": LETTERS[(right - k) % n], "group": q.question_id, "rotation": k}))
    return out


def circular_scores(preds) -> dict:
    """Single pass (rotation 0) and circular (every rotation right) accuracy, overall, per category
    and per l2-category, with the predictions grouped by question (as VLMEvalKit groups by
    `index % 1e6`)."""
    groups: dict[str, list] = {}
    rotation = {}
    for p in preds:
        m = re.fullmatch(r"(.*)@(\d+)", p.question_id)  # ids of `circular`'s rotations, in files written before `group`
        groups.setdefault(p.group or (m.group(1) if m else p.question_id), []).append(p)
        rotation[id(p)] = p.rotation or (int(m.group(2)) if m else 0)

    def acc(keys):
        n = len(keys)
        single = sum(next((p for p in groups[k] if rotation[id(p)] == 0), groups[k][0]).correct for k in keys)
        circ = sum(all(p.correct for p in groups[k]) for k in keys)
        return {"questions": n, "single": single / n if n else 0.0, "circular": circ / n if n else 0.0}

    def by(field):
        names: dict[str, list[str]] = {}
        for k, ps in groups.items():
            names.setdefault(getattr(ps[0], field) or "-", []).append(k)
        return {name: acc(keys) for name, keys in sorted(names.items())}

    return {"overall": acc(list(groups)), "category": by("category"), "l2_category": by("l2_category")}
