"""A folder of images with a JSONL file of {"image": path, "caption": str} or
{"image": path, "captions": [str, ...]} lines; a line may also carry the text written in its picture
(OCR), as "texts": [{"text": str, "bbox": [x1, y1, x2, y2]}, ...]."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..errors import DataError
from ..images import resolve
from ..records import ImageAnnotation, TextAnn
from .common import clip_box, field, numbers, open_text, picture_size


def _relative(image_root: Path, rel: str, where: str) -> str:
    """The path under the root, as the pool stores it (so the pool moves with its folder)."""
    path = resolve(image_root, rel, where)
    return path.relative_to(image_root.resolve()).as_posix()


def read_folder(image_root: str | Path, captions_jsonl: str | Path, report: Counter | None = None) -> list[ImageAnnotation]:
    """One record per image named in the JSONL, its displayed size (EXIF orientation applied) read
    from the picture, decoded whole. Lines naming the same image are merged, so one caption per line
    works as well as a list. Record ids are the paths, relative to the image root. Pictures that are
    missing or cannot be decoded are left out and counted in `report`, as are text boxes with no
    area inside the picture."""
    report = Counter() if report is None else report
    image_root, path = Path(image_root), Path(captions_jsonl)
    records: dict[str, ImageAnnotation] = {}
    with open_text(path) as f:
        try:
            lines = list(f)
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
    left_out: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        rel = _relative(image_root, field(item, "image", str, where), where)
        if "captions" in item:
            captions = field(item, "captions", list, where)
            if not all(isinstance(c, str) for c in captions):
                raise DataError(f"{where}: field 'captions' should be a list of strings")
        elif "caption" in item:
            captions = [field(item, "caption", str, where)]
        else:
            raise DataError(f"{where}: missing field 'caption' (or 'captions')")
        texts = field(item, "texts", list, where) if "texts" in item else []
        if rel in left_out:
            continue
        if rel not in records:
            size = picture_size(image_root, rel, where, report)
            if size is None:
                left_out.add(rel)
                continue
            records[rel] = ImageAnnotation(image_id=rel, image=rel, width=size[0], height=size[1])
        rec = records[rel]
        for c in captions:
            if (c := c.strip()) and c not in rec.captions:
                rec.captions.append(c)
        for k, t in enumerate(texts):
            twhere = f"{where}: texts[{k}]"
            word, bbox = field(t, "text", str, twhere).strip(), numbers(field(t, "bbox", list, twhere), 4, "bbox", twhere)
            if word and (b := clip_box(tuple(bbox), rec.width, rec.height, report)) is not None:
                rec.texts.append(TextAnn(text=word, bbox=b))
    return list(records.values())
