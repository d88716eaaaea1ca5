"""Readers that turn real image-annotation sources into `ImageAnnotation` records.

Formats read, unchanged from their official releases:

* Visual Genome v1.2: image_data.json, objects.json, attributes.json, relationships.json and
  region_descriptions.json in one folder. Each is one big JSON array; they are streamed item by
  item, side by side, so a 100k-image pool never has to fit in memory.
* COCO: captions_*.json and instances_*.json, optionally an LVIS file (instances layout) that adds
  objects. These are loaded whole, as COCO's own tools do.
* A folder of images with a JSONL file of {"image": path, "caption": str} or
  {"image": path, "captions": [str, ...]} lines.

Boxes become (x1, y1, x2, y2) in pixels. Image paths are kept relative to the image root and are
refused when they would leave it ("..", an absolute path elsewhere, a symlink pointing out).
Anything malformed raises `DataError` with one line naming the file and the item.
"""
from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, TextIO
from urllib.parse import urlparse

from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .images import resolve
from .records import ImageAnnotation, ObjectAnn, Region, Relation

Box = tuple[float, float, float, float]

VG_CAPTIONS = 5  # region phrases kept as captions of a Visual Genome image (the longest distinct ones)

# The per-image Visual Genome files, each with the key that holds its image id.
VG_FILES = {
    "objects.json": "image_id",
    "attributes.json": "image_id",
    "relationships.json": "image_id",
    "region_descriptions.json": "id",
}

_NUMBER = (int, float)
_KINDS = {int: "an integer", str: "a string", list: "a list", dict: "an object", _NUMBER: "a number"}


# ---- small checked accessors, so every error names its file and item ----

def _field(item: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object, got {type(item).__name__}")
    if key not in item:
        raise DataError(f"{where}: missing field {key!r}")
    value = item[key]
    # bool is an int to Python, but true/false is never a valid id or coordinate
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: field {key!r} should be {_KINDS[kind]}, got {json.dumps(value)[:40]}")
    return value


def _label(item: Any, key: str, n: int) -> str:
    """How an error names a list item: by its own id where it has one, else by its position."""
    return str(item[key]) if isinstance(item, dict) and key in item else f"#{n}"


def _xywh(x: float, y: float, w: float, h: float) -> Box:
    return (float(x), float(y), float(x + w), float(y + h))


def _box(item: dict, keys: tuple[str, str, str, str], where: str) -> Box:
    return _xywh(*(_field(item, k, _NUMBER, where) for k in keys))


def _clean(label: str) -> str:
    """Names, attributes and predicates compare case- and space-insensitively ("ON " is "on")."""
    return " ".join(label.lower().split())


def _open(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None


def _load_json(path: Path) -> Any:
    with _open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None


# ---- streaming one big JSON array ----

_CHUNK = 1 << 20  # characters read at a time
_MAX_ITEM = 64 << 20  # an item that does not parse within this many characters is malformed, not just long
_BLANKS = re.compile(r"[ \t\r\n]*")
_SEPARATOR = re.compile(r"[,\]]")


class _ArrayReader:
    """Yields the items of a file that holds one JSON array, keeping only about one chunk in memory.

    json's own decoder parses each item (`raw_decode`); this class only finds where items start and
    reads more of the file when an item runs past what has been read so far.
    """

    def __init__(self, f: TextIO, path: Path):
        self.f, self.path = f, path
        self.decoder = json.JSONDecoder()
        self.buf, self.pos, self.eof = "", 0, False

    def _read_more(self) -> None:
        try:
            chunk = self.f.read(_CHUNK)
        except UnicodeDecodeError:
            raise DataError(f"{self.path}: not UTF-8 text") from None
        self.buf, self.pos, self.eof = self.buf[self.pos:] + chunk, 0, not chunk

    def _peek(self) -> str:
        """The next non-blank character, or "" at the end of the file."""
        while True:
            self.pos = _BLANKS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos:self.pos + 1]
            self._read_more()

    def _decode(self, n: int) -> Any:
        if self._peek() == "":
            raise DataError(f"{self.path}: file ends inside the array, at item {n}")
        while True:
            try:
                item, end = self.decoder.raw_decode(self.buf, self.pos)
                # An item is only known to be whole once a ',' or ']' follows it: what was read so
                # far may end inside a number ("-6." of "-6.5e3" decodes as -6).
                if self.eof or _SEPARATOR.search(self.buf, end):
                    self.pos = end
                    return item
            except json.JSONDecodeError as e:
                if self.eof or len(self.buf) - self.pos > _MAX_ITEM:
                    raise DataError(f"{self.path}: item {n}: not valid JSON ({e.msg})") from None
            self._read_more()

    def __iter__(self) -> Iterator[Any]:
        if self._peek() != "[":
            raise DataError(f"{self.path}: expected a JSON array")
        self.pos += 1
        if self._peek() == "]":
            return
        n = 0
        while True:
            yield self._decode(n)
            sep = self._peek()
            if sep == "]":
                return
            if sep != ",":
                raise DataError(f"{self.path}: after item {n}: expected ',' or ']'")
            self.pos += 1
            n += 1


def _stream_json_array(path: Path) -> Iterator[Any]:
    """The items of a file holding one JSON array, one at a time."""
    with _open(path) as f:
        yield from _ArrayReader(f, path)


# ---- Visual Genome ----

def _vg_rows(vg_dir: Path) -> Iterator[tuple[dict, dict[str, dict]]]:
    """Walk image_data.json and the per-image files side by side, one image at a time.

    The official files list the images in the same order; that is checked item by item, not assumed.
    """
    image_data = vg_dir / "image_data.json"
    streams = {name: _stream_json_array(vg_dir / name) for name in VG_FILES}
    for n, info in enumerate(_stream_json_array(image_data)):
        image_id = _field(info, "image_id", int, f"{image_data}: item {n}")
        rows = {}
        for name, stream in streams.items():
            row = next(stream, None)
            where = f"{vg_dir / name}: item {n}"
            if row is None:
                raise DataError(f"{where}: file ends before image {image_id} of image_data.json")
            got = _field(row, VG_FILES[name], int, where)
            if got != image_id:
                raise DataError(f"{where}: image {got} where image_data.json has image {image_id} "
                                "(the files must list the images in the same order)")
            rows[name] = row
        yield info, rows


def _vg_image_path(info: dict, where: str) -> str:
    """VG images live as VG_100K/<id>.jpg or VG_100K_2/<id>.jpg: the last two parts of the url."""
    parts = PurePosixPath(urlparse(_field(info, "url", str, where)).path).parts
    if len(parts) < 2:
        raise DataError(f"{where}: cannot tell the image path from url {info['url']!r}")
    return str(PurePosixPath(*parts[-2:]))


def _vg_object(entry: Any, where: str) -> ObjectAnn:
    """An object as objects.json, attributes.json and both ends of a relationship describe it."""
    oid = _field(entry, "object_id", int, where)
    where = f"{where}: object {oid}"
    # relationships.json gives a subject or object one "name"; the other files give a list of "names"
    names = [entry["name"]] if "name" in entry else _field(entry, "names", list, where)
    if not names or not isinstance(names[0], str):
        raise DataError(f"{where}: field 'names' should be a non-empty list of strings")
    return ObjectAnn(id=oid, name=_clean(names[0]), bbox=_box(entry, ("x", "y", "w", "h"), where))


def _longest_distinct(phrases: Iterable[str], k: int) -> list[str]:
    distinct: dict[str, str] = {}
    for p in phrases:
        distinct.setdefault(_clean(p).rstrip("."), p)
    return sorted(distinct.values(), key=len, reverse=True)[:k]


def _vg_record(image_root: Path, vg_dir: Path, info: dict, rows: dict[str, dict]) -> ImageAnnotation:
    image_id = info["image_id"]
    where = f"{vg_dir / 'image_data.json'}: image {image_id}"
    rel = _vg_image_path(info, where)
    resolve(image_root, rel, where)
    width, height = _field(info, "width", int, where), _field(info, "height", int, where)

    # objects.json is the main list; attributes.json and relationships.json repeat each object with
    # its own box and name, so an object only they mention is added from there rather than dropped
    # (which keeps every relation, and its subject and object always refer to objects of the record).
    objects: dict[int, ObjectAnn] = {}
    where = f"{vg_dir / 'objects.json'}: image {image_id}"
    for entry in _field(rows["objects.json"], "objects", list, where):
        obj = _vg_object(entry, where)
        objects.setdefault(obj.id, obj)

    where = f"{vg_dir / 'attributes.json'}: image {image_id}"
    for entry in _field(rows["attributes.json"], "attributes", list, where):
        obj = objects.setdefault(_field(entry, "object_id", int, where), _vg_object(entry, where))
        # objects without attributes are listed with no "attributes" field at all
        for a in entry.get("attributes") or []:
            if not isinstance(a, str):
                raise DataError(f"{where}: object {obj.id}: attribute {json.dumps(a)[:40]} is not a string")
            if (a := _clean(a)) and a not in obj.attributes:
                obj.attributes.append(a)

    where = f"{vg_dir / 'relationships.json'}: image {image_id}"
    triples: dict[tuple[int, str, int], None] = {}  # an ordered set: VG repeats some relations
    for n, entry in enumerate(_field(rows["relationships.json"], "relationships", list, where)):
        rwhere = f"{where}: relationship {_label(entry, 'relationship_id', n)}"
        predicate = _clean(_field(entry, "predicate", str, rwhere))
        ends = []
        for end in ("subject", "object"):
            ewhere = f"{rwhere}: {end}"
            oid = _field(_field(entry, end, dict, rwhere), "object_id", int, ewhere)
            if oid not in objects:
                objects[oid] = _vg_object(entry[end], ewhere)
            ends.append(oid)
        if predicate:  # a few VG relationships have an empty predicate, which says nothing
            triples[(ends[0], predicate, ends[1])] = None

    where = f"{vg_dir / 'region_descriptions.json'}: image {image_id}"
    regions = []
    for n, entry in enumerate(_field(rows["region_descriptions.json"], "regions", list, where)):
        rwhere = f"{where}: region {_label(entry, 'region_id', n)}"
        phrase = _field(entry, "phrase", str, rwhere).strip()
        if phrase:
            regions.append(Region(bbox=_box(entry, ("x", "y", "width", "height"), rwhere), phrase=phrase))

    return ImageAnnotation(
        image_id=f"vg_{image_id}", image=rel, width=width, height=height,
        captions=_longest_distinct((r.phrase for r in regions), VG_CAPTIONS),
        objects=list(objects.values()),
        relations=[Relation(subject=s, predicate=p, object=o) for s, p, o in triples],
        regions=regions,
    )


def read_visual_genome(vg_dir: str | Path, image_root: str | Path, limit: int | None = None,
                       image_ids: Iterable[int] | None = None) -> Iterator[ImageAnnotation]:
    """Stream Visual Genome v1.2 images as records, in the order of image_data.json.

    `image_ids` (VG's integer ids) and `limit` choose images; only the chosen ones are built, and
    reading stops as soon as they are all found. Record ids are "vg_<image_id>".
    """
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
        yield _vg_record(image_root, vg_dir, info, rows)
        found += 1
        if found == limit or wanted == set():
            return
    if wanted:
        missing = ", ".join(str(i) for i in sorted(wanted)[:5])
        raise DataError(f"{vg_dir / 'image_data.json'}: no image {missing}"
                        + (f" (and {len(wanted) - 5} more)" if len(wanted) > 5 else ""))


# ---- COCO (and LVIS) ----

def _iou(a: Box, b: Box) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _add_coco_objects(records: dict[int, ImageAnnotation], path: Path, captions_json: Path, dedupe: bool = False) -> None:
    """`dedupe`: skip an object that one already on the image names alike with an overlapping box
    (IoU 0.7): LVIS re-annotates COCO's objects, and counting them twice would spoil count questions."""
    data = _load_json(path)
    names = {}
    for n, cat in enumerate(_field(data, "categories", list, str(path))):
        where = f"{path}: category {_label(cat, 'id', n)}"
        names[_field(cat, "id", int, where)] = _field(cat, "name", str, where).replace("_", " ")
    annotations = _field(data, "annotations", list, str(path))
    on_images = 0
    for n, ann in enumerate(annotations):
        where = f"{path}: annotation {_label(ann, 'id', n)}"
        rec = records.get(_field(ann, "image_id", int, where))
        # LVIS covers a different set of images than a COCO captions split; the rest are skipped.
        if rec is None:
            continue
        on_images += 1
        # A crowd box covers many objects at once; as one object it would spoil counts.
        if ann.get("iscrowd"):
            continue
        category = _field(ann, "category_id", int, where)
        if category not in names:
            raise DataError(f"{where}: unknown category_id {category}")
        bbox = _field(ann, "bbox", list, where)
        if len(bbox) != 4 or not all(isinstance(v, _NUMBER) for v in bbox):
            raise DataError(f"{where}: field 'bbox' should be [x, y, width, height]")
        box, name = _xywh(*bbox), names[category]
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
    data = _load_json(captions_json)
    records: dict[int, ImageAnnotation] = {}
    for n, img in enumerate(_field(data, "images", list, str(captions_json))):
        where = f"{captions_json}: image {_label(img, 'id', n)}"
        iid = _field(img, "id", int, where)
        file_name = _field(img, "file_name", str, where)
        rel = str(PurePosixPath(image_dir, file_name)) if image_dir else file_name
        resolve(image_root, rel, where)
        records[iid] = ImageAnnotation(image_id=f"coco_{iid}", image=rel, width=_field(img, "width", int, where),
                                       height=_field(img, "height", int, where))
    for n, ann in enumerate(_field(data, "annotations", list, str(captions_json))):
        where = f"{captions_json}: annotation {_label(ann, 'id', n)}"
        iid = _field(ann, "image_id", int, where)
        if iid not in records:
            raise DataError(f"{where}: image {iid} is not in the file's images")
        caption = _field(ann, "caption", str, where).strip()
        if caption and caption not in records[iid].captions:
            records[iid].captions.append(caption)
    _add_coco_objects(records, Path(instances_json), captions_json)
    if lvis_json is not None:
        _add_coco_objects(records, Path(lvis_json), captions_json, dedupe=True)
    return list(records.values())


# ---- a folder of images with a captions JSONL ----

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
    with _open(path) as f:
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
        rel = _field(item, "image", str, where)
        if "captions" in item:
            captions = _field(item, "captions", list, where)
            if not all(isinstance(c, str) for c in captions):
                raise DataError(f"{where}: field 'captions' should be a list of strings")
        elif "caption" in item:
            captions = [_field(item, "caption", str, where)]
        else:
            raise DataError(f"{where}: missing field 'caption' (or 'captions')")
        if rel not in records:
            width, height = _image_size(resolve(image_root, rel, where), where)
            records[rel] = ImageAnnotation(image_id=rel, image=rel, width=width, height=height)
        for c in captions:
            if (c := c.strip()) and c not in records[rel].captions:
                records[rel].captions.append(c)
    return list(records.values())
