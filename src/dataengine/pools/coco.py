"""COCO: captions_*.json and instances_*.json, optionally an LVIS file (instances layout) that adds
objects. These are loaded whole, as COCO's own tools do."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path, PurePosixPath

from ..errors import DataError
from ..images import resolve
from ..records import ImageAnnotation, ObjectAnn
from .common import Box, clip_box, field, label, load_json, numbers, picture_size, xywh


def _iou(a: Box, b: Box) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def display_name(name: str) -> str:
    """A category's name as a question says it: LVIS's underscores as spaces and its disambiguator
    dropped ("car_(automobile)" -> "car")."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", name.replace("_", " ")).strip()


def _add_coco_objects(records: dict[int, ImageAnnotation], path: Path, captions_json: Path, report: Counter,
                      lvis: bool = False) -> None:
    """The objects of an instances-layout file on the records' images. A crowd region covers many
    objects at once: its category is not counted on that image. LVIS (`lvis`) re-annotates COCO's
    objects, sometimes under another name ("television set" for "tv"): an object that one already on
    the image matches by a synonym of its category and an overlapping box (IoU 0.7) is the same
    object, not a second one. LVIS's per-image lists say which categories are not exhaustively
    annotated (not counted) and which are known absent."""
    data = load_json(path)
    raw, synonyms = {}, {}
    for n, cat in enumerate(field(data, "categories", list, str(path))):
        where = f"{path}: category {label(cat, 'id', n)}"
        cid = field(cat, "id", int, where)
        if cid in raw:
            raise DataError(f"{where}: the category id appears twice")
        raw[cid] = field(cat, "name", str, where)
        synonyms[cid] = {display_name(x) for x in cat.get("synonyms") or [] if isinstance(x, str)}
    # a disambiguator is dropped only where no other category would then share the name ("bow (weapon)"
    # and "bow (decorative ribbons)" keep theirs)
    short = Counter(display_name(r) for r in raw.values())
    names = {cid: display_name(r) if short[display_name(r)] == 1 else r.replace("_", " ") for cid, r in raw.items()}
    for cid in synonyms:
        synonyms[cid] |= {names[cid]}
    if lvis:
        for n, img in enumerate(field(data, "images", list, str(path))):
            where = f"{path}: image {label(img, 'id', n)}"
            rec = records.get(field(img, "id", int, where))
            if rec is None:
                continue
            for key, target in (("not_exhaustive_category_ids", rec.inexhaustive), ("neg_category_ids", rec.absent)):
                ids = img.get(key) or []
                if not isinstance(ids, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in ids):
                    raise DataError(f"{where}: field {key!r} should be a list of category ids, got {json.dumps(ids)[:40]}")
                for cid in ids:
                    if cid not in names:
                        raise DataError(f"{where}: {key}: unknown category {cid}")
                    if names[cid] not in target:
                        target.append(names[cid])
    annotations = field(data, "annotations", list, str(path))
    on_images = 0
    for n, ann in enumerate(annotations):
        where = f"{path}: annotation {label(ann, 'id', n)}"
        rec = records.get(field(ann, "image_id", int, where))
        # LVIS covers a different set of images than a COCO captions split; the rest are skipped.
        if rec is None:
            continue
        on_images += 1
        category = field(ann, "category_id", int, where)
        if category not in names:
            raise DataError(f"{where}: unknown category_id {category}")
        name = names[category]
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, bool):
            raise DataError(f"{where}: field 'iscrowd' should be 0 or 1, got {json.dumps(crowd)[:20]}")
        if crowd:
            if name not in rec.inexhaustive:
                rec.inexhaustive.append(name)
            report["crowd region"] += 1
            continue
        bbox = numbers(field(ann, "bbox", list, where), 4, "bbox", where)
        box = clip_box(xywh(*bbox), rec.width, rec.height, report)
        if box is None:
            continue
        if lvis and any(o.name in synonyms[category] and _iou(o.bbox, box) >= 0.7 for o in rec.objects):
            report["object annotated twice (COCO and LVIS)"] += 1
            continue
        rec.objects.append(ObjectAnn(id=len(rec.objects), name=name, bbox=box))
    if annotations and not on_images:
        raise DataError(f"{path}: none of its {len(annotations)} annotations is on an image of {captions_json.name}")


def read_coco(captions_json: str | Path, instances_json: str | Path, image_root: str | Path,
              image_dir: str = "", lvis_json: str | Path | None = None, report: Counter | None = None,
              check_pictures: bool = True) -> list[ImageAnnotation]:
    """One record per image of the captions file, with its captions and the objects of the instances
    file (and of the LVIS file, if given). Image paths are image_dir/file_name under image_root.
    Object ids are numbered per image; record ids are "coco_<id>". Left out, and counted in
    `report`: images whose picture is missing or cannot be decoded, boxes with no area inside the
    picture, crowd regions, objects LVIS annotates again."""
    report = Counter() if report is None else report
    captions_json, image_root = Path(captions_json), Path(image_root)
    data = load_json(captions_json)
    records: dict[int, ImageAnnotation] = {}
    for n, img in enumerate(field(data, "images", list, str(captions_json))):
        where = f"{captions_json}: image {label(img, 'id', n)}"
        iid = field(img, "id", int, where)
        if iid in records:
            raise DataError(f"{where}: the image id appears twice")
        file_name = field(img, "file_name", str, where)
        rel = str(PurePosixPath(image_dir, file_name)) if image_dir else file_name
        resolve(image_root, rel, where)
        width, height = field(img, "width", int, where), field(img, "height", int, where)
        if width <= 0 or height <= 0:
            raise DataError(f"{where}: width and height should be positive, got {width} x {height}")
        records[iid] = ImageAnnotation(image_id=f"coco_{iid}", image=rel, width=width, height=height)
    for n, ann in enumerate(field(data, "annotations", list, str(captions_json))):
        where = f"{captions_json}: annotation {label(ann, 'id', n)}"
        iid = field(ann, "image_id", int, where)
        if iid not in records:
            raise DataError(f"{where}: image {iid} is not in the file's images")
        caption = field(ann, "caption", str, where).strip()
        if caption and caption not in records[iid].captions:
            records[iid].captions.append(caption)
    if check_pictures:
        listed = len(records)
        records = {i: r for i, r in records.items()
                   if picture_size(image_root, r.image, f"{captions_json}: image {i}", report) is not None}
        if listed and not records:
            first = Path(image_root) / next(iter(data["images"]))["file_name"]
            raise DataError(f"{captions_json}: none of its {listed} pictures is under {image_root} (e.g. {first}): "
                            f"a wrong --image-root, or a missing --coco-image-dir?")
    _add_coco_objects(records, Path(instances_json), captions_json, report)
    if lvis_json is not None:
        _add_coco_objects(records, Path(lvis_json), captions_json, report, lvis=True)
    return list(records.values())
