"""Real pools read as their publishers mean them: Visual Genome v1.4's merges, COCO's crowds, LVIS's
names and exhaustiveness, pictures that are missing, cut short or rotated, boxes that cannot be."""
import io
import json
import random
from collections import Counter

import pytest
from PIL import Image

from dataengine.benchmarks.pope import build_pope
from dataengine.errors import DataError
from dataengine.pools import read_coco, read_folder, read_visual_genome
from dataengine.qtypes import Vocabulary, candidates, verify
from dataengine.records import ImageAnnotation, ObjectAnn, Sample
from tests.support.files import image, rel_end, vg_files, vg_obj, write_vg


def test_visual_genome_v1_4_merges_are_one_object_everywhere(tmp_path):
    files = vg_files()
    man, horse = vg_obj(10, "man", 1, 2, 10, 20, merged_object_ids=[30, 31]), vg_obj(11, "horse", 5, 5, 30, 20)
    other_man = vg_obj(12, "man", 25, 2, 8, 20)
    files["objects.json"][0] = {"image_id": 1, "objects": [man, horse, other_man]}
    # attributes.json and relationships.json still use the ids that were merged away
    files["attributes.json"][0] = {"image_id": 1, "attributes": [vg_obj(30, "man", 1, 2, 10, 20, attributes=["tall"]),
                                                                 vg_obj(31, "man", 1, 3, 10, 19, attributes=["smiling"])]}
    files["relationships.json"][0] = {"image_id": 1, "relationships": [
        {"relationship_id": 100, "predicate": "on", "subject": rel_end(31, "man", 1, 3, 10, 19),
         "object": rel_end(11, "horse", 5, 5, 30, 20), "synsets": []}]}
    rec = next(read_visual_genome(*write_vg(tmp_path, files)))
    names = Counter(o.name for o in rec.objects)
    assert names == {"man": 2, "horse": 1}  # as objects.json has them: two men, not four
    assert rec.object(10).attributes == ["tall", "smiling"]
    assert [(r.subject, r.predicate, r.object) for r in rec.relations] == [(10, "on", 11)]
    asked = {c.question: c.short for c in candidates(5, rec, Vocabulary.from_pool([rec]))}
    assert asked["How many men are there in the image?"] == "two"


def write_coco_lvis(tmp_path):
    root = tmp_path / "coco"
    image(root / "1.jpg", (100, 80))
    images = [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 80}]
    caps = tmp_path / "captions.json"
    caps.write_text(json.dumps({"images": images, "annotations": [{"id": 1, "image_id": 1, "caption": "People in a room."}]}))
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps({"images": images, "categories": [{"id": 1, "name": "person"}, {"id": 62, "name": "tv"},
                                                                 {"id": 63, "name": "couch"}],
                                "annotations": [
                                    {"id": 1, "image_id": 1, "bbox": [10, 10, 20, 40], "category_id": 1, "iscrowd": 0},
                                    {"id": 2, "image_id": 1, "bbox": [40, 10, 50, 60], "category_id": 1, "iscrowd": 1},  # a crowd
                                    {"id": 3, "image_id": 1, "bbox": [60, 5, 30, 20], "category_id": 62, "iscrowd": 0},
                                    {"id": 4, "image_id": 1, "bbox": [0, 50, 60, 30], "category_id": 63, "iscrowd": 0},
                                    {"id": 5, "image_id": 1, "bbox": [10, 10, 0, 30], "category_id": 62, "iscrowd": 0},  # no width
                                    {"id": 6, "image_id": 1, "bbox": [200, 10, 10, 10], "category_id": 63, "iscrowd": 0},  # outside
                                ]}))
    lvis = tmp_path / "lvis.json"
    lvis.write_text(json.dumps({
        "images": [images[0] | {"not_exhaustive_category_ids": [4], "neg_category_ids": [5, 6]}],
        "categories": [{"id": 1, "name": "television_set", "synonyms": ["television_set", "tv", "tv_set"]},
                       {"id": 2, "name": "sofa", "synonyms": ["sofa", "couch", "lounge"]},
                       {"id": 3, "name": "bus_(vehicle)", "synonyms": ["bus_(vehicle)", "autobus"]},
                       {"id": 4, "name": "book", "synonyms": ["book"]}, {"id": 5, "name": "giraffe", "synonyms": []},
                       {"id": 6, "name": "zebra", "synonyms": []}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [61, 5, 29, 20], "category_id": 1},  # COCO's tv again
                        {"id": 2, "image_id": 1, "bbox": [0, 51, 60, 29], "category_id": 2},  # COCO's couch again
                        {"id": 3, "image_id": 1, "bbox": [5, 60, 10, 10], "category_id": 3},
                        {"id": 4, "image_id": 1, "bbox": [70, 60, 5, 5], "category_id": 4}]}))
    return root, caps, inst, lvis


def test_coco_crowds_and_lvis_names_negatives_and_exhaustiveness(tmp_path):
    root, caps, inst, lvis = write_coco_lvis(tmp_path)
    report = Counter()
    [rec] = read_coco(caps, inst, root, lvis_json=lvis, report=report)
    assert Counter(o.name for o in rec.objects) == {"person": 1, "tv": 1, "couch": 1, "bus": 1, "book": 1}
    assert report == {"crowd region": 1, "degenerate box": 2, "object annotated twice (COCO and LVIS)": 2}
    assert set(rec.inexhaustive) == {"person", "book"} and rec.absent == ["giraffe", "zebra"]
    vocab = Vocabulary.from_pool([rec])
    asked = {c.question for c in candidates(5, rec, vocab)}
    assert "How many people are there in the image?" not in asked and "How many books are there in the image?" not in asked
    assert "How many buses are there in the image?" in asked  # "bus (vehicle)" is asked as "bus", in English plural
    q = Sample(id="x", image=rec.image, instruction="How many persons are there in the image?", answer="One.", short_answer="one",
               options=["one", "two", "three", "four"], choice_answer="A", qtype=5)
    assert verify(q, rec, vocab) is None  # a crowd: neither right nor wrong
    wider = Vocabulary(names=vocab.names + ("dog", "cat"), colors=vocab.colors)  # a pool with more names than this image
    seen = [c for c in candidates(2, rec, wider) if c.question.startswith("Which")]
    assert seen and all(c.distractors[:2] == ["giraffe", "zebra"] and "person" not in c.distractors for c in seen)
    # POPE never asks about a crowd's category as absent
    pope = build_pope([rec, rec.model_copy(update={"image": "2.jpg", "objects": rec.objects[:1], "inexhaustive": []})], "popular")
    assert not any(i.image == "1.jpg" and i.label == "no" and "person" in i.text for i in pope)


def test_pope_negatives_are_not_the_same_thing_under_another_number_or_word():
    def ann(i, names):
        return ImageAnnotation(image_id=str(i), image=f"{i}.png", width=10, height=10,
                               objects=[ObjectAnn(id=k, name=n, bbox=(0, 0, 1, 1)) for k, n in enumerate(names)])
    pool = [ann(0, ["trees", "men", "dog"]), ann(1, ["tree", "person", "cat", "car"]), ann(2, ["car", "bus", "kite", "tree"])]
    for split in ("random", "popular", "adversarial"):
        negatives = {i.text for i in build_pope(pool, split) if i.image == "0.png" and i.label == "no"}
        assert not {"Is there a tree in the image?", "Is there a person in the image?"} & negatives, split


def jpeg(size, exif_orientation=None) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, (200, 30, 30))
    img.paste((0, 0, 255), (0, 0, size[0] // 2, size[1]))  # the left half blue
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_pictures_missing_cut_short_or_rotated(tmp_path):
    from dataengine.export import export_hf, export_llava
    from dataengine.images import load_image
    root = tmp_path / "photos"
    root.mkdir()
    (root / "cut.jpg").write_bytes(jpeg((160, 100))[:600])  # a header and the start of the data
    (root / "turned.jpg").write_bytes(jpeg((160, 100), exif_orientation=6))  # shown turned: 100 x 160
    (root / "ok.jpg").write_bytes(jpeg((40, 30)))
    lines = [{"image": "cut.jpg", "caption": "x"}, {"image": "turned.jpg", "caption": "x"}, {"image": str(root / "ok.jpg"), "caption": "x"},
             {"image": "gone.jpg", "caption": "x"}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = Counter()
    recs = read_folder(root, tmp_path / "c.jsonl", report)
    assert [(r.image, r.width, r.height) for r in recs] == [("turned.jpg", 100, 160), ("ok.jpg", 40, 30)]  # relative, displayed size
    assert report == {"unreadable picture": 1, "missing picture": 1}
    shown = load_image(root, "turned.jpg")
    assert shown.size == (100, 160) and shown.getpixel((50, 5))[2] > 200  # turned: the blue half is now on top
    item = Sample(id="s1", image="gone.jpg", instruction="q", answer="a", short_answer="a", options=["a", "b", "c", "d"],
                  choice_answer="A", qtype=1)
    with pytest.raises(DataError, match="gone.jpg: sample s1: image not found"):
        export_llava([item], tmp_path / "x.json", image_root=root)
    with pytest.raises(DataError, match="cut.jpg: sample s1: cannot read image"):
        export_hf([item.model_copy(update={"image": "cut.jpg"})], root, tmp_path / "hf")
    assert not (tmp_path / "x.json").exists()


def test_a_plan_written_by_hand(tmp_path, world):
    from typer.testing import CliRunner

    from dataengine.cli import app
    (tmp_path / "plan.json").write_text(json.dumps({"types": {"4": {"qtype": 4, "count": 5}, "9": {"qtype": 9, "count": 3}}}))
    r = CliRunner().invoke(app, ["generate", "--plan", str(tmp_path / "plan.json"), "--pool", str(world.pool), "--out", str(tmp_path / "g.jsonl")])
    assert r.exit_code == 0, r.output
    made = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert Counter(m["qtype"] for m in made) == {4: 5, 9: 3}
    for bad, needle in ((({"types": {"4": {"qtype": 4}}}), "types.4.count: Field required"),
                        (({"types": {"4": {"qtype": 4, "count": -1}}}), "types.4.count: Input should be greater than or equal to 0"),
                        (({"types": {"4": {"qtype": 5, "count": 1}}}), "types.4: qtype is 5, not 4"),
                        (({"types": {"4": {"qtype": 4, "count": 1, "cont": 2}}}), "types.4.cont: unknown key")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        r = CliRunner().invoke(app, ["generate", "--plan", str(tmp_path / "bad.json"), "--pool", str(world.pool), "--out", str(tmp_path / "b.jsonl")])
        assert r.exit_code == 2 and needle in " ".join(r.output.split()) and "bad.json" in r.output, r.output
    random.seed(0)
