"""COCO: captions_*.json and instances_*.json, optionally an LVIS file (instances layout) that adds
objects. These are loaded whole, as COCO's own tools do."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..errors import DataError
from ..images import resolve
from ..records import ImageAnnotation, ObjectAnn
from .common import NUMBER, Box, field, label, load_json, xywh


def _iou(a: Box, b: Box) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _add_coco_objects(records: dict[int, ImageAnnotation], path: Path, captions_json: Path, dedupe: bool = False) -> None:
    """`dedupe`: skip an object that one already on the image names alike with an overlapping box
    (IoU 0.7): LVIS re-annotates COCO's objects, and counting them twice would spoil count questions."""
    data = load_json(path)
    names = {}
    for n, cat in enumerate(field(data, "categories", list, str(path))):
        where = f"{path}: category {label(cat, 'id', n)}"
        names[field(cat, "id", int, where)] = field(cat, "name", str, where).replace("_", " ")
    annotations = field(data, "annotations", list, str(path))
    on_images = 0
    for n, ann in enumerate(annotations):
        where = f"{path}: annotation {label(ann, 'id', n)}"
        rec = records.get(field(ann, "image_id", int, where))
        # LVIS covers a different set of images than a COCO captions split; the rest are skipped.
        if rec is None:
            continue
        on_images += 1
        # A crowd box covers many objects at once; as one object it would spoil counts.
        if ann.get("iscrowd"):
            continue
        category = field(ann, "category_id", int, where)
        if category not in names:
            raise DataError(f"{where}: unknown category_id {category}")
        bbox = field(ann, "bbox", list, where)
        if len(bbox) != 4 or not all(isinstance(v, NUMBER) for v in bbox):
            raise DataError(f"{where}: field 'bbox' should be [x, y, width, height]")
        box, name = xywh(*bbox), names[category]
        if dedupe and any(o.name == name and _iou(o.bbox, box) >= 0.7 for o in rec.objects):
            continue
        rec.objects.append(ObjectAnn(id=len(rec.objects), name=name, bbox=box))
    if annotations and not on_images:
        raise DataError(f"{path}: none of its {len(annotations)} annotations is on an image of {captions_json.name}")


def read_coco(captions_json: str | Path, instances_json: str | Path, image_root: str | Path,
              image_dir: str = "", lvis_json: str | Path | None = None) -> list[ImageAnnotation]:
    """One record per image of the captions file, with its captions and the objects of the instances
    file (and of the LVIS file, if given). Image paths are image_dir/file_name under image_root.
    Object ids are numbered per image; record ids are "coco_<id>"."""
    captions_json, image_root = Path(captions_json), Path(image_root)
    data = load_json(captions_json)
    records: dict[int, ImageAnnotation] = {}
    for n, img in enumerate(field(data, "images", list, str(captions_json))):
        where = f"{captions_json}: image {label(img, 'id', n)}"
        iid = field(img, "id", int, where)
        file_name = field(img, "file_name", str, where)
        rel = str(PurePosixPath(image_dir, file_name)) if image_dir else file_name
        resolve(image_root, rel, where)
        records[iid] = ImageAnnotation(image_id=f"coco_{iid}", image=rel, width=field(img, "width", int, where),
                                       height=field(img, "height", int, where))
    for n, ann in enumerate(field(data, "annotations", list, str(captions_json))):
        where = f"{captions_json}: annotation {label(ann, 'id', n)}"
        iid = field(ann, "image_id", int, where)
        if iid not in records:
            raise DataError(f"{where}: image {iid} is not in the file's images")
        caption = field(ann, "caption", str, where).strip()
        if caption and caption not in records[iid].captions:
            records[iid].captions.append(caption)
    _add_coco_objects(records, Path(instances_json), captions_json)
    if lvis_json is not None:
        _add_coco_objects(records, Path(lvis_json), captions_json, dedupe=True)
    return list(records.values())
