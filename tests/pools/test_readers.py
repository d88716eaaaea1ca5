import json
from pathlib import Path

import pytest

from dataengine.errors import DataError
from dataengine.pools import read_coco, read_folder, read_visual_genome, stream
from dataengine.pools.stream import stream_json_array
from tests.support.files import image, vg_files, write_vg


def fails(call, *needles: str) -> str:
    """Run call, expect a one-line DataError that mentions every needle."""
    with pytest.raises(DataError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# ---- Visual Genome ----

def test_visual_genome_records(tmp_path):
    vg, images = write_vg(tmp_path, vg_files())
    recs = list(read_visual_genome(vg, images))
    assert [r.image_id for r in recs] == ["vg_1", "vg_2", "vg_3"]
    assert [r.image for r in recs] == ["VG_100K/1.jpg", "VG_100K_2/2.jpg", "VG_100K/3.jpg"]
    assert all((images / r.image).exists() for r in recs)
    one = recs[0]
    assert (one.width, one.height) == (40, 30)
    assert one.object(10).bbox == (1, 2, 11, 22) and one.object(11).bbox == (5, 5, 35, 25)
    assert one.object(10).name == "man" and one.object(10).attributes == ["tall", "smiling"]
    assert one.object(11).attributes == []
    assert one.object(12).name == "hat" and one.object(12).attributes == ["red"]
    assert one.object(13).name == "saddle" and one.object(13).bbox == (6, 4, 11, 6)
    assert [(r.subject, r.predicate, r.object) for r in one.relations] == [(10, "on", 11), (13, "under", 10)]
    ids = {o.id for o in one.objects}
    assert all(r.subject in ids and r.object in ids for r in one.relations)
    # the five longest distinct phrases, ties in file order; "grass" is left out
    assert one.captions == ["a man riding a brown horse", "the horse is brown", "man wearing a hat",
                            "sky above the man", "red hat"]
    assert len(one.regions) == 7 and one.regions[0].bbox == (1, 2, 31, 27)
    two = recs[1]
    assert two.objects[0].bbox == (0, 0, 4.5, 6) and two.objects[0].attributes == ["green"]
    assert two.captions == ["a green tree"] and recs[2].objects == [] and recs[2].captions == []


def test_visual_genome_reads_across_chunk_boundaries(tmp_path, monkeypatch):
    vg, images = write_vg(tmp_path, vg_files(), indent=2)
    whole = list(read_visual_genome(vg, images))
    monkeypatch.setattr(stream, "_CHUNK", 3)  # cuts numbers, strings and keys in two
    assert list(read_visual_genome(vg, images)) == whole


def test_array_items_cut_at_any_point(tmp_path, monkeypatch):
    items = [12345, -6.5e3, 'a "quoted" ], \\', {"a": [1, {"b": None}]}, [], True, 0]
    path = tmp_path / "a.json"
    path.write_text(" [ " + " ,\n ".join(json.dumps(x) for x in items) + " ]\n")
    for chunk in (1, 2, 3, 7, 1 << 20):
        monkeypatch.setattr(stream, "_CHUNK", chunk)
        assert list(stream_json_array(path)) == items
    path.write_text("[ ]")
    assert list(stream_json_array(path)) == []


def test_visual_genome_limit_and_image_ids(tmp_path):
    vg, images = write_vg(tmp_path, vg_files())
    assert [r.image_id for r in read_visual_genome(vg, images, limit=2)] == ["vg_1", "vg_2"]
    assert [r.image_id for r in read_visual_genome(vg, images, image_ids=[3, 1])] == ["vg_1", "vg_3"]
    assert [r.image_id for r in read_visual_genome(vg, images, image_ids=[3, 2], limit=1)] == ["vg_2"]
    fails(lambda: list(read_visual_genome(vg, images, image_ids=[2, 99])), "image_data.json", "no image 99")


def test_visual_genome_stops_reading_after_the_chosen_images(tmp_path):
    vg, images = write_vg(tmp_path, vg_files())
    text = (vg / "objects.json").read_text()
    (vg / "objects.json").write_text(text[:text.index('{"image_id": 3')] + '{"image_id": 3, "obj')  # cut off
    assert [r.image_id for r in read_visual_genome(vg, images, image_ids=[2])] == ["vg_2"]
    fails(lambda: list(read_visual_genome(vg, images)), "objects.json", "item 2", "not valid JSON")


def test_visual_genome_files_out_of_order(tmp_path):
    files = vg_files()
    files["relationships.json"].reverse()
    vg, images = write_vg(tmp_path, files)
    fails(lambda: list(read_visual_genome(vg, images)), "relationships.json", "image 3", "image_data.json has image 1")


def test_visual_genome_missing_field_names_file_image_and_object(tmp_path):
    files = vg_files()
    del files["objects.json"][0]["objects"][1]["names"]
    vg, images = write_vg(tmp_path, files)
    fails(lambda: list(read_visual_genome(vg, images)), "objects.json: image 1: object 11: missing field 'names'")


@pytest.mark.parametrize("content, needle", [
    ('[{"image_id": 1, "objects": [}]', "item 0: not valid JSON"),
    ('{"image_id": 1}', "expected a JSON array"),
    ('[{"image_id": 1, "objects": []} {"image_id": 2}]', "after item 0: expected ',' or ']'"),
])
def test_visual_genome_malformed_file(tmp_path, content, needle):
    vg, images = write_vg(tmp_path, vg_files())
    (vg / "objects.json").write_text(content)
    fails(lambda: list(read_visual_genome(vg, images)), "objects.json", needle)


def test_visual_genome_missing_file(tmp_path):
    vg, images = write_vg(tmp_path, vg_files())
    (vg / "attributes.json").unlink()
    fails(lambda: list(read_visual_genome(vg, images)), "attributes.json: file not found")


def test_visual_genome_refuses_paths_out_of_the_image_root(tmp_path):
    vg, images = write_vg(tmp_path, vg_files(url1="https://example.org/VG_100K/../1.jpg"))
    fails(lambda: list(read_visual_genome(vg, images)), "../1.jpg", "image 1", "leaves the image root")

    # the image folder is a symlink to a folder outside the root
    vg, images = write_vg(tmp_path / "b", vg_files())
    outside = tmp_path / "elsewhere"
    (images / "VG_100K").rename(outside)
    (images / "VG_100K").symlink_to(outside, target_is_directory=True)
    fails(lambda: list(read_visual_genome(vg, images)), "VG_100K/1.jpg", "image 1", "leaves the image root")
    assert [r.image_id for r in read_visual_genome(vg, images, image_ids=[2])] == ["vg_2"]


# ---- COCO ----

def write_coco(tmp_path: Path, file_name: str = "000000000009.jpg") -> tuple[Path, Path, Path, Path]:
    root = tmp_path / "coco"
    image(root / "val2017" / file_name, (64, 48))
    image(root / "val2017" / "000000000025.jpg", (32, 32))
    images = [{"id": 9, "file_name": file_name, "width": 64, "height": 48},
              {"id": 25, "file_name": "000000000025.jpg", "width": 32, "height": 32}]
    captions = tmp_path / "captions_val2017.json"
    captions.write_text(json.dumps({"images": images, "annotations": [
        {"id": 1, "image_id": 9, "caption": "A plate of food. "},
        {"id": 2, "image_id": 9, "caption": "Broccoli on a plate."},
        {"id": 3, "image_id": 25, "caption": "A giraffe."},
        {"id": 4, "image_id": 9, "caption": "A plate of food."},
    ]}))
    instances = tmp_path / "instances_val2017.json"
    instances.write_text(json.dumps({
        "images": images,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 56, "name": "broccoli", "supercategory": "food"}],
        "annotations": [
            {"id": 7, "image_id": 9, "bbox": [1.5, 2, 10, 20.25], "category_id": 56, "iscrowd": 0},
            {"id": 8, "image_id": 9, "bbox": [0, 0, 64, 48], "category_id": 1, "iscrowd": 1},  # a crowd
            {"id": 9, "image_id": 25, "bbox": [3, 4, 5, 6], "category_id": 1, "iscrowd": 0},
        ]}))
    lvis = tmp_path / "lvis_v1_val.json"
    lvis.write_text(json.dumps({
        "images": images,
        "categories": [{"id": 3, "name": "dining_table"}, {"id": 4, "name": "broccoli"}],
        "annotations": [{"id": 7, "image_id": 9, "bbox": [0, 30, 64, 18], "category_id": 3},
                        # COCO's broccoli again (a slightly different box): not a second broccoli
                        {"id": 9, "image_id": 9, "bbox": [1, 2, 10.5, 20], "category_id": 4},
                        # a second broccoli elsewhere on the image is kept
                        {"id": 10, "image_id": 9, "bbox": [40, 2, 10, 10], "category_id": 4},
                        {"id": 8, "image_id": 123456, "bbox": [0, 0, 1, 1], "category_id": 3}],  # not in this split
    }))
    return root, captions, instances, lvis


def test_coco_records(tmp_path):
    root, captions, instances, lvis = write_coco(tmp_path)
    recs = read_coco(captions, instances, root, image_dir="val2017", lvis_json=lvis)
    assert [(r.image_id, r.image, r.width, r.height) for r in recs] == [
        ("coco_9", "val2017/000000000009.jpg", 64, 48), ("coco_25", "val2017/000000000025.jpg", 32, 32)]
    nine, giraffe = recs
    assert nine.captions == ["A plate of food.", "Broccoli on a plate."]
    assert [(o.id, o.name, o.bbox) for o in nine.objects] == [
        (0, "broccoli", (1.5, 2, 11.5, 22.25)), (1, "dining table", (0, 30, 64, 48)), (2, "broccoli", (40, 2, 50, 12))]
    assert [(o.name, o.bbox) for o in giraffe.objects] == [("person", (3, 4, 8, 10))]
    assert [len(r.objects) for r in read_coco(captions, instances, root, image_dir="val2017")] == [1, 1]


@pytest.mark.parametrize("file_name", ["../../x.jpg", "/etc/hostname"])
def test_coco_refuses_paths_out_of_the_image_root(tmp_path, file_name):
    root, captions, instances, _ = write_coco(tmp_path, file_name="000000000009.jpg")
    data = json.loads(captions.read_text())
    data["images"][0]["file_name"] = file_name
    captions.write_text(json.dumps(data))
    fails(lambda: read_coco(captions, instances, root, image_dir="val2017"),
          "captions_val2017.json: image 9", "leaves the image root")


def test_coco_errors(tmp_path):
    root, captions, instances, _ = write_coco(tmp_path)
    good = instances.read_text()
    instances.write_text(good[:-10])
    fails(lambda: read_coco(captions, instances, root, "val2017"), "instances_val2017.json: not valid JSON")

    data = json.loads(good)
    del data["annotations"][2]["bbox"]
    instances.write_text(json.dumps(data))
    fails(lambda: read_coco(captions, instances, root, "val2017"), "instances_val2017.json: annotation 9: missing field 'bbox'")

    for a in data["annotations"]:
        a["image_id"] += 1000  # as if from another split
    instances.write_text(json.dumps(data))
    fails(lambda: read_coco(captions, instances, root, "val2017"), "instances_val2017.json: none of its 3 annotations")
    fails(lambda: read_coco(tmp_path / "nope.json", instances, root), "nope.json: file not found")


# ---- a folder with a captions JSONL ----

def write_folder(tmp_path: Path, lines: list[dict]) -> tuple[Path, Path]:
    root = tmp_path / "photos"
    image(root / "a.png", (17, 9))
    image(root / "sub" / "b.jpg", (12, 30))
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    return root, jsonl


def test_folder_records(tmp_path):
    root, jsonl = write_folder(tmp_path, [
        {"image": "a.png", "caption": "a red square"},
        {"image": "sub/b.jpg", "captions": ["a tall red box", " another red box "]},
        {"image": "a.png", "caption": "red"},
    ])
    recs = read_folder(root, jsonl)
    assert [(r.image_id, r.image, r.width, r.height) for r in recs] == [("a.png", "a.png", 17, 9),
                                                                         ("sub/b.jpg", "sub/b.jpg", 12, 30)]
    assert recs[0].captions == ["a red square", "red"] and recs[1].captions == ["a tall red box", "another red box"]


def test_folder_refuses_paths_out_of_the_image_root(tmp_path):
    outside = image(tmp_path / "outside.png", (4, 4))
    root, jsonl = write_folder(tmp_path, [{"image": "a.png", "caption": "x"}])
    (root / "link.png").symlink_to(outside)
    for bad in ["../outside.png", str(outside), "link.png"]:
        jsonl.write_text(json.dumps({"image": "a.png", "caption": "x"}) + "\n"
                         + json.dumps({"image": bad, "caption": "x"}) + "\n")
        fails(lambda: read_folder(root, jsonl), "captions.jsonl: line 2", "leaves the image root")


@pytest.mark.parametrize("line, needle", [
    ('{"image": "a.png", "caption": ', "line 1: not valid JSON"),
    ('{"image": "a.png"}', "line 1: missing field 'caption' (or 'captions')"),
    ('{"image": "a.png", "captions": "one"}', "line 1: field 'captions' should be a list"),
    ('{"image": 3, "caption": "x"}', "line 1: field 'image' should be a string"),
])
def test_folder_errors(tmp_path, line, needle):
    root, jsonl = write_folder(tmp_path, [])
    jsonl.write_text(line + "\n")
    fails(lambda: read_folder(root, jsonl), "captions.jsonl", needle)


def test_folder_leaves_out_pictures_it_cannot_read_and_counts_them(tmp_path):
    from collections import Counter
    root, jsonl = write_folder(tmp_path, [{"image": "bad.png", "caption": "x"}, {"image": "missing.png", "caption": "x"},
                                          {"image": "a.png", "caption": "fine"}, {"image": "bad.png", "caption": "again"}])
    (root / "bad.png").write_bytes(b"not an image")
    report = Counter()
    assert [r.image for r in read_folder(root, jsonl, report)] == ["a.png"]
    assert report == {"unreadable picture": 1, "missing picture": 1}
