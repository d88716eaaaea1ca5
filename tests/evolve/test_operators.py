"""Each grounded operator, on hand-made annotations, writes a child the verifier confirms and the
judge finds harder; the judge turns away a wrong child and one that is no harder."""
import random

import pytest

from dataengine.evolve.judge import judge_grounded
from dataengine.evolve.grammar import solve
from dataengine.evolve.operators import complexity, evolve_one
from dataengine.qtypes import verify
from dataengine.records import Lineage, Sample
from tests.evolve.test_grammar import ROW, VOCAB, scene

PARENT = Sample(id="p1", image="s.png", instruction="What color is the ball?", answer="The ball is red.", short_answer="red",
                options=["red", "blue", "white", "black"], choice_answer="A", qtype=3, source="round-1")
# three shapes in a column on the left (no pair diagonal, which would leave a relation undecided)
SQUARE = scene(("ball", (8, 4, 32, 28), ["large", "red"]), ("box", (14, 40, 26, 52), ["small", "blue"]),
               ("ring", (8, 64, 32, 88), ["large", "white"]))


@pytest.mark.parametrize("operator", ["perception", "reasoning", "interaction"])
@pytest.mark.parametrize("ann", [ROW, SQUARE], ids=["row", "square"])
def test_each_operator_writes_a_harder_child_the_verifier_confirms(operator, ann):
    made = [c for seed in range(8) if (c := evolve_one(PARENT, ann, VOCAB, operator, 1, random.Random(seed)))]
    assert made, f"{operator} wrote nothing"
    for child in made:
        assert verify(child, ann, VOCAB) == "", child.instruction
        assert child.lineage.parent == "p1" and child.lineage.root == "p1" and child.lineage.operator == operator
        assert child.lineage.steps and child.lineage.complexity > complexity(PARENT, ann, VOCAB)
        assert child.options[ord(child.choice_answer) - 65] == child.short_answer and len(set(child.options)) == 4
        v = judge_grounded(PARENT, child, ann, VOCAB)
        assert v.kept and v.correct and v.improved and v.score > 0
        if operator == "interaction":
            assert child.lineage.format != "multiple choice"
        if operator == "reasoning":
            assert "spatial relation" in child.lineage.skills and len(child.lineage.steps) >= 2


def test_perception_asks_about_an_object_the_parent_did_not_look_at():
    for seed in range(5):
        child = evolve_one(PARENT, SQUARE, VOCAB, "perception", 1, random.Random(seed))
        looked = solve(child.instruction, child.options, SQUARE, VOCAB).objects
        assert looked == {1}  # the small box: the least salient, and not the parent's ball


def test_a_second_round_builds_on_the_first():
    child = evolve_one(PARENT, SQUARE, VOCAB, "reasoning", 1, random.Random(0))
    grand = evolve_one(child, SQUARE, VOCAB, "interaction", 2, random.Random(0))
    assert grand.lineage.parent == child.id and grand.lineage.root == "p1" and grand.lineage.round == 2
    assert verify(grand, SQUARE, VOCAB) == ""


def test_the_judge_rejects_a_wrong_child_and_one_no_harder():
    child = evolve_one(PARENT, SQUARE, VOCAB, "reasoning", 1, random.Random(0))
    wrong_letter = next(l for l in "ABCD" if l != child.choice_answer)
    wrong = child.model_copy(update={"choice_answer": wrong_letter, "short_answer": child.options["ABCD".index(wrong_letter)]})
    v = judge_grounded(PARENT, wrong, SQUARE, VOCAB)
    assert not v.kept and v.correct is False and v.reason.startswith("the annotation says")
    same = PARENT.model_copy(update={"id": "c", "lineage": Lineage(parent="p1", root="p1", operator="perception", round=1)})
    v = judge_grounded(PARENT, same, SQUARE, VOCAB)
    assert v.correct and not v.improved and not v.kept
    unreadable = PARENT.model_copy(update={"id": "c", "instruction": "Why is the ball sad?",
                                           "lineage": Lineage(parent="p1", root="p1", operator="perception", round=1)})
    assert not judge_grounded(PARENT, unreadable, SQUARE, VOCAB).kept  # cannot be confirmed: eliminated


def test_an_operator_with_nothing_to_ask_writes_nothing():
    lone = scene(("ball", (40, 40, 56, 56), ["red"]))
    assert evolve_one(PARENT, lone, VOCAB, "reasoning", 1, random.Random(0)) is None
