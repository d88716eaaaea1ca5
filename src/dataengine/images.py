"""Opening images from an image root, with errors that name the file and the item."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError


def resolve(image_root: str | Path, rel: str, where: str = "") -> Path:
    root = Path(image_root).resolve()
    if "\x00" in rel:
        raise DataError(f"{rel!r}: {where}: a path with a NUL character")
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise DataError(f"{rel}: {where}: image path leaves the image root {root.name}/")
    return path


def load_image(image_root: str | Path, rel: str, where: str = "", max_side: int | None = None) -> Image.Image:
    """The picture as RGB, as it is displayed (EXIF orientation applied: the frame COCO's and Visual
    Genome's boxes are in). `max_side`: decode a JPEG at a reduced scale whose sides are still at
    least that, so a huge photo for a small model costs little memory. DataError (naming the file and
    `where`) for a missing, unreadable or decompression-bomb picture."""
    path = resolve(image_root, rel, where)
    if not path.is_file():
        raise DataError(f"{path}: {where}: image not found")
    try:
        with Image.open(path) as im:
            if max_side:
                im.draft("RGB", (max_side, max_side))
            return ImageOps.exif_transpose(im).convert("RGB")
    except Image.DecompressionBombError:
        raise DataError(f"{path}: {where}: the picture is larger than Pillow's safety limit (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: {where}: cannot read image ({e.__class__.__name__})") from None
