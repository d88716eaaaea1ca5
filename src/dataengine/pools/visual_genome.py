"""Visual Genome v1.2: image_data.json, objects.json, attributes.json, relationships.json and
region_descriptions.json in one folder. Each is one big JSON array; they are streamed item by item,
side by side, so a 100k-image pool never has to fit in memory."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator
from urllib.parse import urlparse

from ..errors import DataError
from ..images import resolve
from ..records import ImageAnnotation, ObjectAnn, Region, Relation
from .common import box, clean, clip_box, field, label, picture_size
from .stream import stream_json_array

VG_CAPTIONS = 5  # region phrases kept as captions of a Visual Genome image (the longest distinct ones)

# The per-image Visual Genome files, each with the key that holds its image id.
VG_FILES = {
    "objects.json": "image_id",
    "attributes.json": "image_id",
    "relationships.json": "image_id",
    "region_descriptions.json": "id",
}


def _vg_rows(vg_dir: Path) -> Iterator[tuple[dict, dict[str, dict]]]:
    """Walk image_data.json and the per-image files side by side, one image at a time.

    The official files list the images in the same order; that is checked item by item, not assumed.
    """
    image_data = vg_dir / "image_data.json"
    streams = {name: stream_json_array(vg_dir / name) for name in VG_FILES}
    for n, info in enumerate(stream_json_array(image_data)):
        image_id = field(info, "image_id", int, f"{image_data}: item {n}")
        rows = {}
        for name, stream in streams.items():
            row = next(stream, None)
            where = f"{vg_dir / name}: item {n}"
            if row is None:
                raise DataError(f"{where}: file ends before image {image_id} of image_data.json")
            got = field(row, VG_FILES[name], int, where)
            if got != image_id:
                raise DataError(f"{where}: image {got} where image_data.json has image {image_id} "
                                "(the files must list the images in the same order)")
            rows[name] = row
        yield info, rows


def _vg_image_path(info: dict, where: str) -> str:
    """VG images live as VG_100K/<id>.jpg or VG_100K_2/<id>.jpg: the last two parts of the url."""
    parts = PurePosixPath(urlparse(field(info, "url", str, where)).path).parts
    if len(parts) < 2:
        raise DataError(f"{where}: cannot tell the image path from url {info['url']!r}")
    return str(PurePosixPath(*parts[-2:]))


def _vg_object(entry: Any, where: str) -> ObjectAnn:
    """An object as objects.json, attributes.json and both ends of a relationship describe it."""
    oid = field(entry, "object_id", int, where)
    where = f"{where}: object {oid}"
    # relationships.json gives a subject or object one "name"; the other files give a list of "names"
    names = [entry["name"]] if "name" in entry else field(entry, "names", list, where)
    if not names or not isinstance(names[0], str):
        raise DataError(f"{where}: field 'names' should be a non-empty list of strings")
    return ObjectAnn(id=oid, name=clean(names[0]), bbox=box(entry, ("x", "y", "w", "h"), where))


def _longest_distinct(phrases: Iterable[str], k: int) -> list[str]:
    distinct: dict[str, str] = {}
    for p in phrases:
        distinct.setdefault(clean(p).rstrip("."), p)
    return sorted(distinct.values(), key=len, reverse=True)[:k]


def _vg_record(image_root: Path, vg_dir: Path, info: dict, rows: dict[str, dict], report: Counter,
               check_pictures: bool = True) -> ImageAnnotation | None:
    image_id = info["image_id"]
    where = f"{vg_dir / 'image_data.json'}: image {image_id}"
    rel = _vg_image_path(info, where)
    resolve(image_root, rel, where)
    width, height = field(info, "width", int, where), field(info, "height", int, where)
    if width <= 0 or height <= 0:
        raise DataError(f"{where}: width and height should be positive, got {width} x {height}")
    if check_pictures and picture_size(image_root, rel, where, report) is None:
        return None

    # objects.json is the main list; attributes.json and relationships.json repeat each object with
    # its own box and name, so an object only they mention is added from there rather than dropped
    # (which keeps every relation, and its subject and object always refer to objects of the record).
    objects: dict[int, ObjectAnn] = {}
    # v1.4 merged duplicate objects into one and lists the ids it absorbed; attributes.json and
    # relationships.json still use the old ids, so each is mapped to the object that absorbed it.
    merged: dict[int, int] = {}
    where = f"{vg_dir / 'objects.json'}: image {image_id}"
    for entry in field(rows["objects.json"], "objects", list, where):
        obj = _vg_object(entry, where)
        objects.setdefault(obj.id, obj)
        for old in entry.get("merged_object_ids") or []:
            if not isinstance(old, int) or isinstance(old, bool):
                raise DataError(f"{where}: object {obj.id}: merged_object_ids should be numbers, got {json.dumps(old)[:40]}")
            merged[old] = obj.id

    where = f"{vg_dir / 'attributes.json'}: image {image_id}"
    for entry in field(rows["attributes.json"], "attributes", list, where):
        oid = field(entry, "object_id", int, where)
        obj = objects.setdefault(merged.get(oid, oid), _vg_object(entry, where))
        # objects without attributes are listed with no "attributes" field at all
        attrs = entry.get("attributes") or []
        if not isinstance(attrs, list):
            raise DataError(f"{where}: object {obj.id}: field 'attributes' should be a list, got {json.dumps(attrs)[:40]}")
        for a in attrs:
            if not isinstance(a, str):
                raise DataError(f"{where}: object {obj.id}: attribute {json.dumps(a)[:40]} is not a string")
            if (a := clean(a)) and a not in obj.attributes:
                obj.attributes.append(a)

    where = f"{vg_dir / 'relationships.json'}: image {image_id}"
    triples: dict[tuple[int, str, int], None] = {}  # an ordered set: VG repeats some relations
    for n, entry in enumerate(field(rows["relationships.json"], "relationships", list, where)):
        rwhere = f"{where}: relationship {label(entry, 'relationship_id', n)}"
        predicate = clean(field(entry, "predicate", str, rwhere))
        ends = []
        for end in ("subject", "object"):
            ewhere = f"{rwhere}: {end}"
            oid = field(field(entry, end, dict, rwhere), "object_id", int, ewhere)
            oid = merged.get(oid, oid)
            if oid not in objects:
                objects[oid] = _vg_object(entry[end], ewhere)
            ends.append(oid)
        if predicate:  # a few VG relationships have an empty predicate, which says nothing
            triples[(ends[0], predicate, ends[1])] = None

    where = f"{vg_dir / 'region_descriptions.json'}: image {image_id}"
    regions = []
    for n, entry in enumerate(field(rows["region_descriptions.json"], "regions", list, where)):
        rwhere = f"{where}: region {label(entry, 'region_id', n)}"
        phrase = field(entry, "phrase", str, rwhere).strip()
        if phrase:
            regions.append(Region(bbox=box(entry, ("x", "y", "width", "height"), rwhere), phrase=phrase))

    kept = []
    for o in objects.values():
        if (b := clip_box(o.bbox, width, height, report)) is not None:
            kept.append(o.model_copy(update={"bbox": b}))
    ids = {o.id for o in kept}
    return ImageAnnotation(
        image_id=f"vg_{image_id}", image=rel, width=width, height=height,
        captions=_longest_distinct((r.phrase for r in regions), VG_CAPTIONS),
        objects=kept,
        relations=[Relation(subject=s, predicate=p, object=o) for s, p, o in triples if s in ids and o in ids],
        regions=[r.model_copy(update={"bbox": b}) for r in regions if (b := clip_box(r.bbox, width, height, Counter()))],
    )


def read_visual_genome(vg_dir: str | Path, image_root: str | Path, limit: int | None = None,
                       image_ids: Iterable[int] | None = None, report: Counter | None = None,
                       check_pictures: bool = True) -> Iterator[ImageAnnotation]:
    """Stream Visual Genome (v1.2 or v1.4) images as records, in the order of image_data.json.

    `image_ids` (VG's integer ids) and `limit` choose images; only the chosen ones are built, and
    reading stops as soon as they are all found. Record ids are "vg_<image_id>". v1.4's merged
    objects are one object (its attributes and relations follow it). What is left out is counted in
    `report`: images whose picture is missing or cannot be decoded (checked whole, unless
    `check_pictures` is off), boxes with no area inside the picture (and their relations).
    """
    report = Counter() if report is None else report
    vg_dir, image_root = Path(vg_dir), Path(image_root)
    wanted = set(image_ids) if image_ids is not None else None
    if limit == 0 or wanted == set():
        return
    found = 0
    for info, rows in _vg_rows(vg_dir):
        if wanted is not None:
            if info["image_id"] not in wanted:
                continue
            wanted.discard(info["image_id"])
        rec = _vg_record(image_root, vg_dir, info, rows, report, check_pictures)
        if rec is None:
            continue
        yield rec
        found += 1
        if found == limit or wanted == set():
            return
    if wanted:
        missing = ", ".join(str(i) for i in sorted(wanted)[:5])
        raise DataError(f"{vg_dir / 'image_data.json'}: no image {missing}"
                        + (f" (and {len(wanted) - 5} more)" if len(wanted) > 5 else ""))
