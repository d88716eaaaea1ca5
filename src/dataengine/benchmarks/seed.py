"""SEED-Bench's JSON format, read unchanged and written the same way (the synthetic world's benchmark)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from ..records import LETTERS, QTYPES, Question, write_json

SEED_FIELDS = ("question_id", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer",
               "question_type_id", "data_id")


def read_seed(path: str | Path) -> list[Question]:
    """Read SEED-Bench JSON. Video dimensions (ids 10-12) are skipped with a note; anything malformed
    raises a one-line error naming the file and the question."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: benchmark file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    items = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise DataError(f"{path}: no 'questions' list (not a SEED-Bench file)")
    out, skipped = [], 0
    for n, q in enumerate(items):
        qid = q.get("question_id", f"#{n}") if isinstance(q, dict) else f"#{n}"
        where = f"{path}: question {qid}"
        if not isinstance(q, dict):
            raise DataError(f"{where}: not an object")
        missing = [f for f in SEED_FIELDS if f not in q]
        if missing:
            raise DataError(f"{where}: missing field {missing[0]!r}")
        if q.get("data_type", "image") != "image":
            skipped += 1
            continue
        try:
            qtype = int(q["question_type_id"])
        except (TypeError, ValueError):
            raise DataError(f"{where}: question_type_id {q['question_type_id']!r} is not a number") from None
        if qtype not in QTYPES:
            if qtype in (10, 11, 12):
                skipped += 1
                continue
            raise DataError(f"{where}: unknown question_type_id {qtype} (image dimensions are 1-9)")
        answer = str(q["answer"]).strip().upper()
        if answer not in LETTERS:
            raise DataError(f"{where}: answer {q['answer']!r} is not one of A-D")
        out.append(Question(question_id=str(q["question_id"]), question=q["question"],
                            options=[str(q[f"choice_{x}"]) for x in "abcd"], answer=answer, qtype=qtype,
                            image=str(q["data_id"])))
    if skipped:
        print(f"{path}: skipped {skipped} video questions (this evaluator reads image dimensions 1-9)")
    if not out:
        raise DataError(f"{path}: no image questions in the file")
    return out


def write_seed(path: str | Path, questions: list[Question]) -> Path:
    return write_json(path, {
        "question_type": {name: t for t, (name, _) in QTYPES.items()},
        "questions": [{
            "answer": q.answer, "choice_a": q.options[0], "choice_b": q.options[1], "choice_c": q.options[2],
            "choice_d": q.options[3], "data_id": q.image, "data_type": "image", "question": q.question,
            "question_id": q.question_id, "question_type_id": q.qtype,
        } for q in questions],
    })
