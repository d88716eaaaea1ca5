"""A folder of images with a JSONL file of {"image": path, "caption": str} or
{"image": path, "captions": [str, ...]} lines."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..images import resolve
from ..records import ImageAnnotation
from .common import field, open_text


def _image_size(path: Path, where: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:  # reads the header only; pixels are not decoded
            return im.size
    except FileNotFoundError:
        raise DataError(f"{path}: {where}: image not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: {where}: cannot read image ({e.__class__.__name__})") from None


def read_folder(image_root: str | Path, captions_jsonl: str | Path) -> list[ImageAnnotation]:
    """One record per image named in the JSONL, its size read from the file. Lines naming the same
    image are merged, so one caption per line works as well as a list. Record ids are the paths."""
    image_root, path = Path(image_root), Path(captions_jsonl)
    records: dict[str, ImageAnnotation] = {}
    with open_text(path) as f:
        try:
            lines = list(f)
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        rel = field(item, "image", str, where)
        if "captions" in item:
            captions = field(item, "captions", list, where)
            if not all(isinstance(c, str) for c in captions):
                raise DataError(f"{where}: field 'captions' should be a list of strings")
        elif "caption" in item:
            captions = [field(item, "caption", str, where)]
        else:
            raise DataError(f"{where}: missing field 'caption' (or 'captions')")
        if rel not in records:
            width, height = _image_size(resolve(image_root, rel, where), where)
            records[rel] = ImageAnnotation(image_id=rel, image=rel, width=width, height=height)
        for c in captions:
            if (c := c.strip()) and c not in records[rel].captions:
                records[rel].captions.append(c)
    return list(records.values())
