"""The grounded hallucination detector and corrector on hand-made descriptions of a hand-made image."""
import pytest

from dataengine.generate.hallucination import CLAIM_KINDS, Judged, correct, detect, judge_sentence, sentences, shr
from dataengine.records import ImageAnnotation, ObjectAnn, TextAnn

NAMES = ["ball", "box", "pyramid", "star", "ring", "cross"]


def image(**over) -> ImageAnnotation:
    """96 x 96: a small red ball at the top left, two large blue boxes at the bottom (left and right),
    a sign reading STOP in the middle."""
    fields = dict(image_id="img", image="img.png", width=96, height=96, objects=[
        ObjectAnn(id=0, name="ball", bbox=(8, 8, 24, 24), attributes=["red", "small"]),
        ObjectAnn(id=1, name="box", bbox=(4, 70, 30, 92), attributes=["blue", "large"]),
        ObjectAnn(id=2, name="box", bbox=(66, 70, 92, 92), attributes=["blue", "large"]),
    ], texts=[TextAnn(text="STOP", bbox=(36, 40, 60, 56))])
    return ImageAnnotation(**(fields | over))


@pytest.mark.parametrize("sentence, reason, kind", [
    ("There is a star in the image.", "no star in the image", "object"),
    ("A small yellow ball at the top left.", "no small yellow ball in the image", "attribute"),
    ("A large red ball sits at the top left.", "no large red ball in the image", "attribute"),
    ("There are three boxes.", "2 boxes, not 3", "count"),
    ("There are two blue boxes and one ball.", None, None),
    ("A small red ball at the bottom right.", "no ball at the bottom right", "position"),
    ('A sign reading "EXIT" at the center.', 'no text "EXIT" in the image', "text"),
    ('A sign reading "STOP" at the top left.', 'no sign reading "STOP" at the top left', "position"),
    ("A sign at the bottom right.", "no sign at the bottom right", "position"),
    ("Two pyramids stand at the top.", "no pyramid in the image", "object"),
])
def test_false_claims_are_found_with_their_reason_and_kind(sentence, reason, kind):
    v = judge_sentence(sentence, image(), NAMES)
    if reason is None:
        assert v.verdict == "correct" and v.kinds == [], v.reasons
    else:
        assert v.verdict == "hallucinated" and v.reasons == [reason] and v.kinds == [kind]


@pytest.mark.parametrize("sentence", [
    "A small red ball at the top left.",
    "A small red ball, at the top left; ",
    "The boxes are blue.",
    "Two large blue boxes at the bottom.",
    'A sign reads "STOP".',
    "A sign at the center.",
    "A box at the bottom left and a box at the bottom right.",
])
def test_true_sentences_are_left_alone(sentence):
    assert judge_sentence(sentence, image(), NAMES).verdict == "correct"


def test_what_cannot_be_checked_is_not_judged():
    assert judge_sentence("The picture looks bright and cheerful.", image(), NAMES).verdict == "unjudged"
    # a name the detector does not know is no claim; one the annotation may have missed is not judged
    assert judge_sentence("A dog runs by.", image(), NAMES).verdict == "unjudged"
    crowd = image(inexhaustive=["star"])
    assert judge_sentence("A star at the top right.", crowd, NAMES).verdict == "unjudged"
    assert judge_sentence("Three balls.", image(inexhaustive=["ball"]), NAMES).verdict == "correct"  # not counted
    # Visual Genome's annotators named what they chose: an unannotated name is not absent there ...
    assert judge_sentence("A star at the top right.", image(), NAMES, exhaustive=False).verdict == "unjudged"
    # ... unless the pool says it is (LVIS's negatives)
    assert judge_sentence("A star.", image(absent=["star"]), NAMES, exhaustive=False).verdict == "hallucinated"
    # a sign where the pool has no OCR boxes: it may not annotate text at all
    assert judge_sentence("A sign at the top left.", image(texts=[]), NAMES).verdict == "unjudged"
    # a sign said nowhere in particular claims nothing the boxes check: a loop of them is no sentence judged
    assert judge_sentence("a sign a sign a sign.", image(), NAMES).verdict == "unjudged"
    # a sign that is part of a name the detector knows is judged as that object, not as a sign
    stop = image(objects=[ObjectAnn(id=0, name="stop sign", bbox=(8, 8, 24, 24))], texts=[])
    assert judge_sentence("A stop sign at the top left.", stop, ["stop sign"]).verdict == "correct"


def test_a_sign_s_word_and_place_are_judged_together():
    """With several signs, a word said at another sign's place is false, and the corrector moves each
    sign to where its own word is."""
    two = image(texts=[TextAnn(text="STOP", bbox=(4, 4, 28, 20)), TextAnn(text="EXIT", bbox=(68, 76, 92, 92))])
    v = judge_sentence('A sign reading "STOP" at the bottom right.', two, NAMES)
    assert v.verdict == "hallucinated" and v.reasons == ['no sign reading "STOP" at the bottom right'] and v.kinds == ["position"]
    assert judge_sentence('A sign reading "EXIT" at the bottom right.', two, NAMES).verdict == "correct"
    assert judge_sentence("A sign at the bottom right.", two, NAMES).verdict == "correct"
    fixed = correct('a sign reading "EXIT" at the top right; a sign reading "STOP" at the bottom left.', two, NAMES)
    assert fixed == 'a sign reading "EXIT" at the bottom right; a sign reading "STOP" at the top left.'


def test_a_place_on_a_grid_line_may_be_said_either_way():
    ann = image(objects=[ObjectAnn(id=0, name="ring", bbox=(26, 8, 38, 20), attributes=["white"])])  # centre x = 32 = w/3
    assert judge_sentence("A ring at the top left.", ann, NAMES).verdict == "correct"
    assert judge_sentence("A ring at the top center.", ann, NAMES).verdict == "correct"
    assert judge_sentence("A ring at the top right.", ann, NAMES).verdict == "hallucinated"


def test_sentences_and_clauses():
    assert sentences('a red ball at the top left; a sign reading "STOP" at the center. Two boxes!') == [
        "a red ball at the top left;", 'a sign reading "STOP" at the center.', "Two boxes!"]


def test_correction_makes_every_sentence_true_and_keeps_the_true_ones_word_for_word():
    text = ("a small red ball at the top left; a large yellow box at the bottom left; there are three boxes; "
            "a star at the top right; a sign reading \"EXIT\" at the center; a sign at the top left.")
    ann = image()
    fixed = correct(text, ann, NAMES)
    assert fixed == ("a small red ball at the top left; a large blue box at the bottom left; there are two boxes; "
                     "a sign reading \"STOP\" at the center; a sign at the center.")
    assert all(v.verdict == "correct" for v in detect(fixed, ann, NAMES))


def test_an_absent_object_becomes_one_the_description_left_out_or_goes():
    ann = image()
    assert correct("A small red ball at the top left. A large star at the bottom right.", ann, NAMES) == \
        "A small red ball at the top left. A large blue box at the bottom left."
    # nothing unmentioned is left: the sentence goes
    assert correct("A small red ball. Two boxes. A star at the top right.", ann, NAMES) == "A small red ball. Two boxes."
    # made true, a sentence that would repeat another is about an unmentioned object instead
    assert correct("a small red ball at the top left; a yellow ball at the top left.", ann, NAMES) == \
        "a small red ball at the top left; a large blue box at the bottom left."


def test_counts_turn_singular_with_their_verb():
    ann = image(objects=image().objects[:2])
    assert correct("There are three boxes at the bottom left.", ann, NAMES) == "There is one box at the bottom left."


def test_shr_counts_judged_sentences_only():
    ann = image()
    judged = [Judged(id=str(i), image="img.png", prompt="Describe.", text=t, sentences=detect(t, ann, NAMES))
              for i, t in enumerate(["A star. A small red ball. It is nice.", "Two boxes. A cross.",
                                     'A yellow ball at the bottom right and a sign reading "EXIT".'])]
    assert shr(judged) == {"shr": 0.6, "hallucinated": 3, "judged": 5, "sentences": 6, "descriptions": 3,
                           "by_kind": {"object": 2, "attribute": 1, "count": 0, "position": 0, "text": 1}, "loops": 0}
    assert shr([])["shr"] == 0.0 and shr([])["by_kind"] == {}
    # a detector that gives no kinds (an LLM's) gives no breakdown
    plain = [j.model_copy(update={"sentences": [s.model_copy(update={"kinds": []}) for s in j.sentences]}) for j in judged]
    assert shr(plain)["by_kind"] == {} and shr(plain)["shr"] == 0.6
    llm = [j.model_copy(update={"detector": "llm:some-model:hallucination-v1"}) for j in judged]
    assert shr(llm)["by_kind"] == {}
    # nothing hallucinated: every kind at zero, so a round that removes them all says so
    clean = [Judged(id="c", image="img.png", prompt="Describe.", text="A small red ball.",
                    sentences=detect("A small red ball.", ann, NAMES))]
    assert shr(clean)["by_kind"] == dict.fromkeys(CLAIM_KINDS, 0)
    from dataengine.hadpo import kinds_change
    assert kinds_change(shr(judged), shr(clean)) == "object 2 -> 0, attribute 1 -> 0, count 0 -> 0, position 0 -> 0, text 1 -> 0"
    assert kinds_change(shr(judged), shr(plain)) == ""


def test_shr_counts_the_descriptions_that_loop():
    """DPO's degeneration ("a sign a sign a sign") makes no false claim, so SHR alone would not see it."""
    ann = image()
    texts = ["a sign a sign a sign a small red ball.", "A small red ball. A small red ball.", "the the the star.",
             "a small red ball at the center; a small red ball at the center; a small red ball at the center."]
    judged = [Judged(id=str(i), image="img.png", prompt="Describe.", text=t, sentences=detect(t, ann, NAMES))
              for i, t in enumerate(texts)]
    assert shr(judged)["loops"] == 2  # a phrase three times in a row; sentences said again apart are not a loop
    from dataengine.hadpo import summary_line
    line = summary_line({"shr": shr(judged), "pope": {}})
    assert "2 of 4 descriptions loop" in line
    assert "loop" not in summary_line({"shr": {k: v for k, v in shr(judged).items() if k != "loops"}, "pope": {}})
