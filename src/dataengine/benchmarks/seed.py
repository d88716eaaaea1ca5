"""SEED-Bench's JSON format, read unchanged and written the same way (the synthetic world's benchmark)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..errors import DataError
from ..records import LETTERS, QTYPES, Question, read_json, write_json

SEED_FIELDS = ("question_id", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer",
               "question_type_id", "data_id")


# `data_type` values of image questions: SEED-Bench's "image", SEED-Bench-2's "Single Image"
IMAGE_TYPES = ("image", "Single Image")


def _table(data: dict, path: Path) -> dict[int, str] | None:
    """The file's own `question_type` table (name -> id) as id -> name; None when the file has none."""
    table = data.get("question_type")
    if table is None:
        return None
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                              for k, v in table.items()):
        raise DataError(f"{path}: question_type should map each type's name to its number")
    names: dict[int, str] = {}
    for name, t in table.items():
        if t in names:
            raise DataError(f"{path}: question_type gives number {t} to both {names[t]!r} and {name!r}")
        names[t] = name
    return names


def _text(q: dict, field: str, where: str) -> str:
    v = q[field]
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise DataError(f"{where}: field {field!r} should be text, got {json.dumps(v)[:40]}")
    return str(v)


def read_seed(path: str | Path) -> list[Question]:
    """Read SEED-Bench (or SEED-Bench-2) JSON. The file's own `question_type` table names the types
    (the published file numbers Location and Attributes otherwise than its paper: names, not numbers,
    decide what a type is); without one, SEED-Bench's nine names. Questions that are not about one
    image (video, several images, generation) are skipped with a note. Anything malformed raises a
    one-line error naming the file, the question and the field."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: benchmark file not found")
    data = read_json(path)
    items = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise DataError(f"{path}: no 'questions' list (not a SEED-Bench file)")
    names = _table(data, path)
    out, skipped, ids = [], Counter(), set()
    for n, q in enumerate(items):
        qid = q.get("question_id", f"#{n}") if isinstance(q, dict) else f"#{n}"
        where = f"{path}: question {qid}"
        if not isinstance(q, dict):
            raise DataError(f"{where}: not an object")
        missing = [f for f in SEED_FIELDS if f not in q]
        if missing:
            raise DataError(f"{where}: missing field {missing[0]!r}")
        if q.get("data_type", "image") not in IMAGE_TYPES:
            skipped[str(q.get("data_type"))] += 1
            continue
        raw = q["question_type_id"]
        if isinstance(raw, bool) or not (isinstance(raw, int) or isinstance(raw, str) and raw.strip().isdigit()):
            raise DataError(f"{where}: question_type_id {raw!r} is not a whole number")
        qtype = int(raw)
        if names is not None and qtype not in names:
            raise DataError(f"{where}: question_type_id {qtype} is not in the file's question_type table")
        if names is None and qtype not in QTYPES:
            if qtype in (10, 11, 12):  # SEED-Bench's video dimensions
                skipped["video"] += 1
                continue
            raise DataError(f"{where}: unknown question_type_id {qtype} (image dimensions are 1-9)")
        answer = _text(q, "answer", where).strip().upper()
        if answer not in LETTERS[:4]:
            raise DataError(f"{where}: answer {q['answer']!r} is not one of A-D")
        image = q["data_id"]
        if isinstance(image, list) and len(image) == 1:
            image = image[0]
        if not isinstance(image, str) or not image:
            raise DataError(f"{where}: field 'data_id' should be the image's path, got {json.dumps(image)[:40]}")
        qid = _text(q, "question_id", where)
        if qid in ids:
            raise DataError(f"{where}: the question_id appears twice")
        ids.add(qid)
        out.append(Question(question_id=qid, question=_text(q, "question", where),
                            options=[_text(q, f"choice_{x}", where) for x in "abcd"], answer=answer, qtype=qtype,
                            image=image, category=names[qtype] if names else QTYPES[qtype][0], order=n))
    if skipped:
        kinds = ", ".join(f"{n} {kind}" for kind, n in skipped.items())
        print(f"{path}: skipped {kinds} questions (this evaluator reads questions about one image)")
    if not out:
        raise DataError(f"{path}: no image questions in the file")
    return out


def write_seed(path: str | Path, questions: list[Question]) -> Path:
    return write_json(path, {
        "question_type": {q.category or QTYPES[q.qtype][0]: q.qtype for q in sorted(questions, key=lambda q: q.qtype)},
        "questions": [{
            "answer": q.answer, "choice_a": q.options[0], "choice_b": q.options[1], "choice_c": q.options[2],
            "choice_d": q.options[3], "data_id": q.image, "data_type": "image", "question": q.question,
            "question_id": q.question_id, "question_type_id": q.qtype,
        } for q in questions],
    })
