"""Opening images from an image root, with errors that name the file and the item."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import DataError


def resolve(image_root: str | Path, rel: str, where: str = "") -> Path:
    root = Path(image_root).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise DataError(f"{rel}: {where}: image path leaves the image root {root.name}/")
    return path


def load_image(image_root: str | Path, rel: str, where: str = "") -> Image.Image:
    path = resolve(image_root, rel, where)
    if not path.exists():
        raise DataError(f"{path}: {where}: image not found")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: {where}: cannot read image ({e.__class__.__name__})") from None
