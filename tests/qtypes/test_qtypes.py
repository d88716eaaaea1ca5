"""Question types as plug-ins: each asks what the annotation says, checks items against it, and says
when a pool cannot supply it."""
import random

import pytest

from dataengine.generate import make_sample
from dataengine.qtypes import QUESTION_TYPES, Vocabulary, candidates, unavailable, verify
from dataengine.qtypes.scene import setting_from_captions
from dataengine.qtypes.vocabulary import plural
from dataengine.records import ImageAnnotation, ObjectAnn, TextAnn
from dataengine.sample import Plan, TypePlan, to_generator_types
from dataengine.world.render import VOCABULARY as WORLD

SCENE = ImageAnnotation(
    image_id="s", image="s.png", width=96, height=96, setting="beach",
    objects=[ObjectAnn(id=0, name="ball", bbox=(10, 10, 40, 40), attributes=["red", "large"]),
             ObjectAnn(id=1, name="box", bbox=(60, 15, 75, 30), attributes=["blue", "small"]),
             ObjectAnn(id=2, name="star", bbox=(60, 60, 70, 70), attributes=["yellow", "small"])],
    texts=[TextAnn(text="STOP", bbox=(5, 70, 40, 90))])

# per type: the question the annotation answers, and its answer
EXPECTED = {
    1: ("What kind of place is shown in the image?", "beach"),
    2: ("What is the red object in the image?", "ball"),
    3: ("What color is the ball?", "red"),
    4: ("Where is the red ball in the image?", "top left"),
    5: ("How many balls are there in the image?", "one"),
    6: ("Where is the red ball relative to the blue box?", "to the left"),
    7: ("What is the contact between the red ball and the blue box?", "apart"),
    8: ("If all the objects were made of the same material, which one would be the heaviest?", "ball"),
    9: ("What word is written on the sign?", "STOP"),
}


@pytest.mark.parametrize("qtype", range(1, 10))
def test_each_type_asks_what_the_annotation_says_and_checks_it(qtype):
    question, answer = EXPECTED[qtype]
    found = {c.question: c for c in candidates(qtype, SCENE, WORLD)}
    assert found[question].short == answer and answer not in found[question].distractors
    item = make_sample(found[question], qtype, SCENE, random.Random(0), "test", "grounded")
    assert verify(item, SCENE, WORLD) == ""  # confirmed
    wrong = next(o for o in item.options if o != answer)
    assert verify(item.model_copy(update={"short_answer": wrong}), SCENE, WORLD)  # contradicted, with a reason


def test_verify_refuses_what_is_not_in_the_image_and_leaves_what_it_cannot_judge():
    _, answer = EXPECTED[3]
    item = make_sample(candidates(3, SCENE, WORLD)[0], 3, SCENE, random.Random(0), "t", "g")
    assert verify(item.model_copy(update={"instruction": "What color is the pyramid?"}), SCENE, WORLD) == \
        "refers to an object not in the image"
    assert verify(item.model_copy(update={"instruction": "What color is the sky?"}), SCENE, WORLD) is None
    assert verify(item.model_copy(update={"qtype": 12}), SCENE, WORLD) is None  # a type no plug-in knows


def test_the_place_is_read_from_captions_that_agree():
    assert setting_from_captions(["A man surfing near the beach.", "Waves roll onto a sandy beach."]) == "beach"
    assert setting_from_captions(["A bus on a city street."]) == "city street"  # the longer name wins, alone
    assert setting_from_captions(["A dog in the park.", "A kitchen with a stove."]) is None  # they disagree
    assert setting_from_captions(["A dog in the park.", "A brown dog."]) is None  # one of two captions is not agreement
    assert setting_from_captions(["Cars in a parking lot.", "A parking lot at night."]) == "parking lot"  # not "park"
    ann = SCENE.model_copy(update={"setting": None, "captions": ["Kids play on the beach.", "A beach in summer."]})
    assert candidates(1, ann, Vocabulary.from_pool([ann]))[0].short == "beach"


def test_plurals():
    assert [plural(n) for n in ("box", "cross", "ball", "man", "person", "bus", "traffic light", "knife", "sheep", "party")] == \
        ["boxes", "crosses", "balls", "men", "people", "buses", "traffic lights", "knives", "sheep", "parties"]
    man = ImageAnnotation(image_id="m", image="m.png", width=10, height=10,
                          objects=[ObjectAnn(id=i, name="man", bbox=(i, i, i + 1, i + 1)) for i in range(2)])
    assert [c.question for c in candidates(5, man, Vocabulary.from_pool([man]))] == ["How many men are there in the image?"]


def pool_of(n, **fields):
    return [SCENE.model_copy(update={"image_id": str(i), "image": f"{i}.png", **fields}) for i in range(n)]


def test_a_pool_without_settings_or_text_says_so_and_its_share_goes_elsewhere():
    bare = pool_of(5, setting=None, captions=["Some things."], texts=[])
    missing = unavailable(bare, Vocabulary.from_pool(bare))
    assert set(missing) == {1, 9}
    assert "kind of place" in missing[1] and "OCR" in missing[9]
    # with captions that name the place, and words written in its pictures, the pool supplies both
    words = ["STOP", "EXIT", "OPEN", "SALE"]
    full = [a.model_copy(update={"setting": None, "captions": [f"A sunny {p}.", f"The {p} today."],
                                 "texts": [TextAnn(text=words[i % 4], bbox=(0, 0, 5, 5))]})
            for i, (a, p) in enumerate(zip(pool_of(8), ["beach", "forest", "kitchen", "office"] * 2))]
    assert unavailable(full, Vocabulary.from_pool(full)) == {}
    # the plan: types the pool cannot supply get nothing, the budget is still spent
    plan = Plan(strategy="uniform", budget=90, types={t: TypePlan(qtype=t, name=QUESTION_TYPES.get(t).name, accuracy=0.5,
                                                                  ratio=1 / 9, count=10, examples=[]) for t in range(1, 10)})
    shared = to_generator_types(plan, {t: t for t in range(1, 10)}, missing)
    assert shared.unavailable == {"Scene Understanding": missing[1], "Text Understanding": missing[9]}
    counts = shared.counts()
    assert 1 not in counts and 9 not in counts and sum(counts.values()) == 90


def test_find_references_reads_a_bare_name_followed_by_another_word():
    from dataengine.qtypes.vocabulary import find_references
    from dataengine.records import ImageAnnotation, ObjectAnn
    ann = ImageAnnotation(image_id="a", image="a.png", width=64, height=64, objects=[
        ObjectAnn(id=0, name="ring", bbox=[0, 0, 8, 8], attributes=["blue", "small"]),
        ObjectAnn(id=1, name="star", bbox=[9, 9, 20, 20], attributes=["red"])])
    ids = lambda text: [[o.id for o in group] for group in find_references(ann, text, set())]  # noqa: E731
    # "the ring relative" once read "ring" as a colour and "relative" as the name, and found nothing
    assert ids("Where is the ring relative to the star?") == [[0], [1]]
    assert ids("Is the small ring above the red star?") == [[0], [1]]
    assert ids("Where is the blue ring in the image?") == [[0]]
    assert ids("Is the red ring here?") == [[]]  # a ring, but not a red one
