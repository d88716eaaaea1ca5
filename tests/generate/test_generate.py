import random

from dataengine.filter import check_format, check_leak
from dataengine.generate import GroundedGenerator, balance_answers, generate
from dataengine.qtypes import Vocabulary, candidates, verify
from dataengine.records import ImageAnnotation, Prediction, read_jsonl
from dataengine.world.render import VOCABULARY as WORLD
from dataengine.world.render import annotate, build_pool, render_scene
from tests.support.files import vg_files, write_vg


def test_every_type_is_generated_and_correct_against_its_annotation(world):
    pool = read_jsonl(world.pool, ImageAnnotation)
    anns = {a.image: a for a in pool}
    items = generate({t: 20 for t in range(1, 10)}, pool, GroundedGenerator(WORLD))
    by_type = {t: [s for s in items if s.qtype == t] for t in range(1, 10)}
    assert all(len(v) == 20 for v in by_type.values())
    for s in items:
        assert check_format(s) is None and check_leak(s) is None, s
        assert verify(s, anns[s.image], WORLD) == "", s  # confirmed, not merely undecided
    # letters are spread, not always the same position
    assert len({s.choice_answer for s in items}) == 4


def test_verifier_catches_wrong_answers():
    """Swap each item's answer for a distractor: the independent verifier must object."""
    caught = total = 0
    for seed in range(60):
        _, facts = render_scene(seed)
        ann = annotate(str(seed), f"{seed}.png", facts)
        for t in range(1, 10):
            for s in GroundedGenerator(WORLD).generate(t, ann, [], random.Random(seed)):
                wrong = next(o for o in s.options if o != s.short_answer)
                total += 1
                caught += bool(verify(s.model_copy(update={"short_answer": wrong}), ann, WORLD))  # a reason, not "" or None
    assert total > 200 and caught == total


def test_bad_cases_focus_the_generator():
    anns = (annotate(str(i), f"{i}.png", render_scene(i)[1]) for i in range(100))
    ann = next(a for a in anns if len({c.short for c in candidates(3, a, WORLD)}) >= 3)
    answers = {c.short for c in candidates(3, ann, WORLD)}
    target = sorted(answers)[0]
    ex = [Prediction(question_id="q", qtype=3, image="b.png", question="What color is the ring?",
                     options=[target, "a", "b", "c"], answer="A", prediction="B", correct=False)]
    got = [GroundedGenerator(WORLD, focus=1.0).generate(3, ann, ex, random.Random(i))[0].short_answer for i in range(20)]
    assert set(got) == {target}


def test_balance_answers_round_robin():
    from dataengine.records import Sample
    mk = lambda i, a: Sample(id=str(i), image="x", instruction="q", answer=a, short_answer=a, options=[a, "b", "c", "d"], choice_answer="A", qtype=5)
    items = [mk(i, "one") for i in range(10)] + [mk(10, "two"), mk(11, "three")]
    picked = balance_answers(items, 5)
    assert [s.short_answer for s in picked] == ["one", "two", "three", "one", "one"]


def test_excluded_images_are_not_used(world):
    pool = read_jsonl(world.pool, ImageAnnotation)
    banned = {a.image for a in pool[:300]}
    items = generate({1: 30}, pool, GroundedGenerator(WORLD), exclude_images={1: banned})
    assert items and not {s.image for s in items} & banned


def test_a_real_pool_gives_its_own_distractors(tmp_path):
    from dataengine.pools import read_visual_genome
    files = vg_files()
    # a fourth image, so the pool has more names than one image shows
    files["image_data.json"].append({"image_id": 4, "url": "https://cs.stanford.edu/people/rak248/VG_100K/4.jpg",
                                     "width": 30, "height": 30, "coco_id": None, "flickr_id": None})
    objs = [("dog", "brown"), ("cat", "gray"), ("car", "green"), ("bus", "orange")]
    files["objects.json"].append({"image_id": 4, "objects": [{"object_id": 40 + i, "x": i, "y": i, "w": 3, "h": 3,
                                                              "names": [n], "synsets": []} for i, (n, _) in enumerate(objs)]})
    files["attributes.json"].append({"image_id": 4, "attributes": [
        {"object_id": 40 + i, "x": i, "y": i, "w": 3, "h": 3, "names": [n], "synsets": [], "attributes": [c]}
        for i, (n, c) in enumerate(objs)]})
    for name in ("relationships.json", "region_descriptions.json"):
        files[name].append({"image_id": 4, "id": 4, "relationships": [], "regions": []})
    pool = list(read_visual_genome(*write_vg(tmp_path, files)))
    vocab = Vocabulary.from_pool(pool)
    assert set(vocab.names) == {"man", "horse", "hat", "saddle", "tree", "dog", "cat", "car", "bus"}
    assert {"brown", "gray", "green", "red"} <= set(vocab.colors) and len(vocab.colors) >= 4
    items = generate({2: 3, 3: 4}, pool, GroundedGenerator(vocab=vocab), seed=0)
    assert items
    for s in items:
        others = set(s.options) - {s.short_answer}
        assert others <= set(vocab.names) | set(vocab.colors), s.options  # nothing from the synthetic world
        assert not others & set(WORLD.names)
    # the synthetic world's pool keeps the world's own vocabulary (and so its items)
    assert Vocabulary.from_pool(build_pool(tmp_path / "w", "p", range(20), 96), base=WORLD) == WORLD
