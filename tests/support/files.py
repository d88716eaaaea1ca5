"""Small files in the official layouts, written for tests: pictures, Visual Genome releases, MMBench TSVs."""
import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image


def image(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def vg_obj(oid, name, x, y, w, h, **more):
    return {"object_id": oid, "x": x, "y": y, "w": w, "h": h, "names": [name], "synsets": [], **more}


def rel_end(oid, name, x, y, w, h):
    return {"object_id": oid, "x": x, "y": y, "w": w, "h": h, "name": name, "synsets": []}


def region(rid, image_id, phrase, x=0, y=0, w=5, h=5):
    return {"region_id": rid, "image_id": image_id, "phrase": phrase, "x": x, "y": y, "width": w, "height": h}


def vg_files(url1="https://cs.stanford.edu/people/rak248/VG_100K/1.jpg") -> dict[str, list]:
    """Three images in the official v1.2 layout; image 1 carries the interesting cases."""
    man, horse = vg_obj(10, "Man ", 1, 2, 10, 20), vg_obj(11, "horse", 5, 5, 30, 20)
    return {
        "image_data.json": [
            {"image_id": 1, "url": url1, "width": 40, "height": 30, "coco_id": None, "flickr_id": None},
            {"image_id": 2, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/2.jpg", "width": 20,
             "height": 10, "coco_id": 5, "flickr_id": None},
            {"image_id": 3, "url": "https://cs.stanford.edu/people/rak248/VG_100K/3.jpg", "width": 8,
             "height": 8, "coco_id": None, "flickr_id": 9},
        ],
        "objects.json": [
            {"image_id": 1, "objects": [man, horse]},
            {"image_id": 2, "objects": [vg_obj(20, "tree", 0, 0, 4.5, 6)]},
            {"image_id": 3, "objects": []},
        ],
        "attributes.json": [
            # the hat (12) is only in attributes.json; the horse has no "attributes" field, as in VG
            {"image_id": 1, "attributes": [{**man, "attributes": ["tall", " Tall", "smiling"]},
                                           {**horse},
                                           vg_obj(12, "hat", 3, 0, 4, 3, attributes=["red"])]},
            {"image_id": 2, "attributes": [{**vg_obj(20, "tree", 0, 0, 4.5, 6), "attributes": ["green"]}]},
            {"image_id": 3, "attributes": []},
        ],
        "relationships.json": [
            {"image_id": 1, "relationships": [
                {"relationship_id": 100, "predicate": "ON", "subject": rel_end(10, "man", 1, 2, 10, 20),
                 "object": rel_end(11, "horse", 5, 5, 30, 20), "synsets": []},
                {"relationship_id": 101, "predicate": "on", "subject": rel_end(10, "man", 1, 2, 10, 20),
                 "object": rel_end(11, "horse", 5, 5, 30, 20), "synsets": []},  # a repeat
                # the saddle (13) is only here: it becomes an object of the record
                {"relationship_id": 102, "predicate": "under", "subject": rel_end(13, "Saddle", 6, 4, 5, 2),
                 "object": rel_end(10, "man", 1, 2, 10, 20), "synsets": []},
                {"relationship_id": 103, "predicate": " ", "subject": rel_end(12, "hat", 3, 0, 4, 3),
                 "object": rel_end(10, "man", 1, 2, 10, 20), "synsets": []},
            ]},
            {"image_id": 2, "relationships": []},
            {"image_id": 3, "relationships": []},
        ],
        "region_descriptions.json": [
            {"id": 1, "regions": [
                region(1, 1, "a man riding a brown horse", 1, 2, 30, 25),
                region(2, 1, "A man riding a brown horse."),  # the same phrase again
                region(3, 1, "red hat"), region(4, 1, "the horse is brown"), region(5, 1, "man wearing a hat"),
                region(6, 1, "grass"), region(7, 1, "sky above the man"), region(8, 1, ""),
            ]},
            {"id": 2, "regions": [region(9, 2, "a green tree")]},
            {"id": 3, "regions": []},
        ],
    }


def write_vg(root: Path, files: dict[str, list], indent: int | None = None) -> tuple[Path, Path]:
    vg, images = root / "vg", root / "images"
    vg.mkdir(parents=True, exist_ok=True)
    for name, items in files.items():
        (vg / name).write_text(json.dumps(items, indent=indent))
    for info in files["image_data.json"]:
        if info["url"].startswith("https://cs.stanford.edu/"):
            image(images / "/".join(info["url"].split("/")[-2:]), (info["width"], info["height"]))
    return vg, images


def b64_image(color, fmt="JPEG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def write_tsv(path, rows, fields=("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image")):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, delimiter="\t")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})
