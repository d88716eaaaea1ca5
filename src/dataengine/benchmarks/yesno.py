"""VLMEvalKit's yes/no TSVs (POPE.tsv, MME.tsv): index, image (base64, or another row's index),
question, answer (Yes / No), category (POPE's split, MME's subtask)."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from ..errors import DataError
from ..records import read_table
from .mmbench import _decode, _write_image

FIELDS = ("index", "image", "question", "answer", "category")


class YesNoItem(BaseModel):
    question_id: str
    image: str  # relative to the image folder it was written to
    question: str
    label: str  # "yes" or "no"
    category: str
    source: str = ""  # the picture's name in the benchmark (`image_path`), where the file gives it


def read_yes_no_tsv(path: str | Path, image_dir: str | Path) -> list[YesNoItem]:
    """The rows of a VLMEvalKit yes/no TSV, their images written once into `image_dir` (named by
    index and content, so two files never share a picture they do not share)."""
    path, image_dir = Path(path), Path(image_dir)
    rows = read_table(path)
    missing = [c for c in FIELDS if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r}")
    image_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for r in rows:
        idx = (r["index"] or "").strip()
        if not (idx.isascii() and idx.isdigit()):
            raise DataError(f"{path}: index {idx!r} is not a whole number")
        if idx in seen:
            raise DataError(f"{path}: question {idx}: the index appears twice")
        seen.add(idx)
    own = {}
    for r in rows:
        img = (r["image"] or "").strip()
        if not (img.isdigit() and len(img) < 16):
            idx = (r["index"] or "").strip()
            own[idx] = _write_image(_decode(img, f"{path}: question {idx}"), idx, image_dir)
    out = []
    for r in rows:
        idx, img = (r["index"] or "").strip(), (r["image"] or "").strip()
        where = f"{path}: question {idx}"
        rel = own.get(idx) or own.get(img)
        if rel is None:
            raise DataError(f"{where}: image refers to row {img}, which has no image")
        label = (r["answer"] or "").strip().lower()
        if label not in ("yes", "no"):
            raise DataError(f"{where}: answer {r['answer']!r} is not Yes or No")
        out.append(YesNoItem(question_id=idx, image=rel, question=(r["question"] or "").strip(), label=label,
                             category=(r["category"] or "").strip(), source=(r.get("image_path") or "").strip()))
    return out
