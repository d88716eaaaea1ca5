"""The evolution grammar reads chained phrases, questions and statements back against hand-made
annotations, and refuses to decide what the boxes leave open."""
from dataengine.evolve.grammar import check, resolve, solve, truth
from dataengine.qtypes import Vocabulary
from dataengine.records import ImageAnnotation, Lineage, ObjectAnn, Sample

VOCAB = Vocabulary(names=("ball", "box", "star", "ring", "cross", "pyramid"),
                   colors=("red", "blue", "yellow", "purple", "white", "black"))


def scene(*objs) -> ImageAnnotation:
    return ImageAnnotation(image_id="s", image="s.png", width=96, height=96,
                           objects=[ObjectAnn(id=i, name=n, bbox=b, attributes=a) for i, (n, b, a) in enumerate(objs)])


# a large red ball on the left, a small blue box to its right, a small yellow star right of the box
ROW = scene(("ball", (4, 40, 28, 64), ["large", "red"]), ("box", (40, 46, 52, 58), ["small", "blue"]),
            ("star", (72, 46, 84, 58), ["small", "yellow"]))


def test_chained_phrases_single_out_objects_step_by_step():
    assert [o.name for o in resolve("the object to the right of the red ball", ROW, VOCAB)] == ["box", "star"]
    assert [o.name for o in resolve("the object to the left of the yellow star", ROW, VOCAB)] == ["ball", "box"]
    assert [o.name for o in resolve("the object to the left of the object to the right of the blue box", ROW, VOCAB)] == ["ball", "box"]
    assert resolve("the green ball", ROW, VOCAB) == []  # names nothing in the image
    assert resolve("the object to the right of the ball box", ROW, VOCAB) is None  # not this grammar


def test_a_diagonal_neighbour_leaves_a_relation_undecided():
    diag = scene(("ball", (4, 4, 20, 20), ["red"]), ("box", (30, 30, 46, 46), ["blue"]))
    assert resolve("the object to the right of the red ball", diag, VOCAB) is None
    assert solve("What color is the object to the right of the red ball?", [], diag, VOCAB) is None


def test_solve_records_steps_objects_and_skills():
    sol = solve("What color is the object to the left of the object to the right of the red ball?", [], ROW, VOCAB)
    assert sol is None  # the object right of the ball is not one object: the chain does not single out
    sol = solve("What shape is the object to the left of the blue box?", [], ROW, VOCAB)
    assert sol.answer == "ball" and sol.objects == {0, 1} and sol.skills == {"shape", "spatial relation"}
    assert len(sol.steps) == 3 and sol.complexity == 3 + 2 + 2
    seed = solve("What color is the ball?", [], ROW, VOCAB)
    assert seed.answer == "red" and seed.complexity == 2 + 1 + 1  # find it, read it; one object; one skill
    assert solve("How many objects are to the right of the red ball?", [], ROW, VOCAB).answer == "two"


def test_statements_are_true_false_or_undecided():
    assert truth("The object to the right of the blue box is yellow.", ROW, VOCAB)[0] is True
    assert truth("The blue box is to the right of the yellow star.", ROW, VOCAB)[0] is False
    assert truth("There are two balls in the image.", ROW, VOCAB)[0] is False
    assert truth("The moon is made of cheese.", ROW, VOCAB) is None


def item(question, options, answer) -> Sample:
    return Sample(id="c", image="s.png", instruction=question, answer=answer, short_answer=answer, options=options,
                  choice_answer="ABCD"[options.index(answer)], qtype=3,
                  lineage=Lineage(parent="p", root="p", operator="interaction", round=1))


def test_check_confirms_right_items_and_refutes_wrong_ones():
    opts = ["The ball is red.", "The ball is blue.", "The ball is white.", "The ball is black."]
    assert check(item("Which statement about the image is true?", opts, opts[0]), ROW, VOCAB) == ""
    assert check(item("Which statement about the image is true?", opts, opts[1]), ROW, VOCAB) == "the annotation says 'The ball is red.'"
    two_true = ["The ball is red.", "The box is blue.", "The ball is white.", "The ball is black."]
    assert check(item("Which statement about the image is true?", two_true, two_true[0]), ROW, VOCAB) is None
    blank = ["to the left of", "to the right of", "above", "below"]
    assert check(item("Fill in the blank: The red ball is ___ the blue box.", blank, "to the left of"), ROW, VOCAB) == ""
    assert check(item("Fill in the blank: The red ball is ___ the blue box.", blank, "above"), ROW, VOCAB) is not None
    order = ["ball, box, star", "box, ball, star", "star, box, ball", "ball, star, box"]
    assert check(item("From left to right, in which order are the shapes?", order, "ball, box, star"), ROW, VOCAB) == ""
    listed = ["zero", "one", "two", "three"]
    assert check(item("How many of these shapes are in the image: ball, ring, star?", listed, "two"), ROW, VOCAB) == ""
    assert check(item("How many of these shapes are in the image: ball, ring, star?", listed, "three"), ROW, VOCAB) is not None
    colors = ["blue, red, yellow", "blue, red", "red, white, yellow", "blue, yellow"]
    assert check(item("Which option lists every color in the image?", colors, colors[0]), ROW, VOCAB) == ""
