"""What the pool readers share: checked accessors, so every error names its file and item, and
file opening with one-line errors. Boxes become (x1, y1, x2, y2) in pixels."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from PIL import Image

from .. import records
from ..errors import DataError
from ..images import resolve

Box = tuple[float, float, float, float]

NUMBER = (int, float)
KINDS = {int: "an integer", str: "a string", list: "a list", dict: "an object", NUMBER: "a number"}


# ---- small checked accessors, so every error names its file and item ----

def field(item: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object, got {type(item).__name__}")
    if key not in item:
        raise DataError(f"{where}: missing field {key!r}")
    value = item[key]
    # bool is an int to Python, but true/false is never a valid id or coordinate; NaN and infinity
    # (which JSON readers accept) are never a valid coordinate either
    if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise DataError(f"{where}: field {key!r} should be {KINDS[kind]}, got {json.dumps(value)[:40]}")
    return value


def numbers(value: Any, n: int, what: str, where: str) -> list[float]:
    """A list of `n` finite numbers (a box), or DataError naming `what`."""
    if not (isinstance(value, list) and len(value) == n and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise DataError(f"{where}: field {what!r} should be {n} finite numbers, got {json.dumps(value)[:60]}")
    return [float(v) for v in value]


def label(item: Any, key: str, n: int) -> str:
    """How an error names a list item: by its own id where it has one, else by its position."""
    return str(item[key]) if isinstance(item, dict) and key in item else f"#{n}"


def xywh(x: float, y: float, w: float, h: float) -> Box:
    return (float(x), float(y), float(x + w), float(y + h))


def box(item: dict, keys: tuple[str, str, str, str], where: str) -> Box:
    return xywh(*(field(item, k, NUMBER, where) for k in keys))


def clean(text: str) -> str:
    """Names, attributes and predicates compare case- and space-insensitively ("ON " is "on")."""
    return " ".join(text.lower().split())


def open_text(path: Path) -> TextIO:
    return records.open_text(path)


def load_json(path: Path) -> Any:
    with open_text(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None


# ---- pictures and boxes, checked as a pool is read ----

def picture_size(image_root: Path, rel: str, where: str, report: Counter) -> tuple[int, int] | None:
    """The displayed size (EXIF orientation applied) of a pool's picture, after decoding the whole
    file (JPEG at 1/8 scale, which still reads every byte); None, counted in `report`, when the
    picture is missing, cannot be decoded, or is past Pillow's decompression-bomb limit."""
    path = resolve(image_root, rel, where)
    if not path.is_file():
        report["missing picture"] += 1
        return None
    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except Image.DecompressionBombError:
        report["picture too large"] += 1
        return None
    except (OSError, SyntaxError, ValueError):
        report["unreadable picture"] += 1
        return None
    return (h, w) if turned else (w, h)


def clip_box(b: Box, width: int, height: int, report: Counter) -> Box | None:
    """The box cut to the picture; None, counted in `report`, when it has no area inside it
    (negative or zero width or height, or wholly outside)."""
    x1, y1, x2, y2 = max(b[0], 0.0), max(b[1], 0.0), min(b[2], float(width)), min(b[3], float(height))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        report["degenerate box"] += 1
        return None
    return (x1, y1, x2, y2)
