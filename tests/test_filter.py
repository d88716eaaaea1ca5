import shutil

from dataengine.benchmarks.seed import read_seed
from dataengine.filter import BenchmarkGuard, filter_samples
from dataengine.records import ImageAnnotation, Sample, read_jsonl


def good(**over):
    base = dict(id="s1", image="pool/pool_000001.png", instruction="What color is the ball?", answer="The ball is red.",
                short_answer="red", options=["blue", "red", "green", "black"], choice_answer="B", qtype=3)
    return Sample(**(base | over))


def test_each_bad_case_is_rejected_with_its_reason(world, tmp_path):
    questions = read_seed(world.benchmark)
    bench_img = questions[0].image
    # the same picture as a benchmark image under another name must be caught by content
    shutil.copy(world.image_root / bench_img, world.image_root / "pool" / "renamed_copy.png")
    guard = BenchmarkGuard(questions, world.image_root)
    cases = {
        "empty field": good(id="a", instruction=" "),
        "not 4 options": good(id="b", options=["red", "blue", "green"]),
        "options not distinct": good(id="c", options=["red", "Red", "green", "black"], choice_answer="A"),
        "the marked letter's option is not the short answer": good(id="d", choice_answer="A"),
        "answer not among options": good(id="d2", short_answer="pink", answer="The ball is pink."),
        "question leaks the answer": good(id="e", instruction="What color is the red ball?"),
        "benchmark item": good(id="f", image=bench_img),
        "benchmark image": good(id="g", image="pool/renamed_copy.png"),
        "answer letter not A-D": good(id="h", choice_answer="E"),
        "missing image": good(id="i", image="pool/does_not_exist.png"),
        "unreadable image": good(id="j", image="pool/not_a_picture.png"),
    }
    (world.image_root / "pool" / "not_a_picture.png").write_text("garbage")
    kept, dropped, report = filter_samples([good()] + list(cases.values()), guard)
    assert [s.id for s in kept] == ["s1"]
    reasons = {s.id: r for s, r in dropped}
    for want, s in cases.items():
        assert reasons[s.id] == want
    # an image the pool does not annotate is kept, unchecked, and counted as such
    pool = read_jsonl(world.pool, ImageAnnotation)
    other = next(a for a in pool if a.image != "pool/pool_000001.png")
    _, _, report = filter_samples([good()], guard, {other.image: other})
    assert report.kept == 1 and report.unverified == 1


def test_duplicates_and_annotation_contradictions(world):
    pool = read_jsonl(world.pool, ImageAnnotation)
    ann = next(a for a in pool if any(o.name == "ball" for o in a.objects) and sum(o.name == "ball" for o in a.objects) == 1)
    ball = next(o for o in ann.objects if o.name == "ball")
    color = ball.attributes[0]
    wrong = next(c for c in ["red", "blue", "green", "black", "white"] if c != color)
    right = good(id="r", image=ann.image, short_answer=color, options=[color, "x1", "x2", "x3"], choice_answer="A",
                 answer=f"The ball is {color}.")
    contra = good(id="w", image=ann.image, instruction="What color is the ball ?", short_answer=wrong,
                  options=[wrong, "x1", "x2", "x3"], choice_answer="A")
    kept, dropped, report = filter_samples([right, right.model_copy(update={"id": "dup"}), contra],
                                           annotations={a.image: a for a in pool})
    assert [s.id for s in kept] == ["r"]
    assert dict((s.id, r.split(":")[0]) for s, r in dropped) == {"dup": "duplicate", "w": "contradicts annotation"}
    assert report.dropped_by_type[3] == {"duplicate": 1, "contradicts annotation": 1}


def test_unverifiable_items_can_be_dropped(world):
    anns = {a.image: a for a in read_jsonl(world.pool, ImageAnnotation)}
    ann = next(a for a in anns.values() if a.objects)
    people = good(image=ann.image, instruction="How many people are there in the image?", short_answer="two",
                  options=["one", "two", "three", "four"], choice_answer="B", qtype=5)  # the world has no people
    kept, _, _ = filter_samples([people], annotations=anns)
    assert kept == [people]  # by default an item the annotation cannot decide is kept
    kept, dropped, report = filter_samples([people], annotations=anns, drop_unverified=True)
    assert not kept and dropped[0][1] == "cannot be verified against the annotation"
    assert report.dropped == {"cannot be verified against the annotation": 1}


class PrefersRed:
    """A model with a prior and no eyes: "red" is always its answer."""

    def score_options(self, items):
        return [[0.0 if o == "red" else 1.0 for o in options] for _, _, options in items]


def test_items_answered_without_the_image_can_be_dropped(world, tmp_path):
    from dataengine.filter import answered_blind, answered_by_llm
    from dataengine.llm.client import LLMClient, LLMConfig
    from tests.support.fake_llm import FakeLLM
    red = good()
    blue = good(id="s2", instruction="What color is the box?", answer="The box is blue.", short_answer="blue", choice_answer="A")
    kept, dropped, report = filter_samples([red, blue], blind=answered_blind(PrefersRed(), world.image_root))
    assert [s.id for s in kept] == ["s2"] and [(s.id, r) for s, r in dropped] == [("s1", "answered without the image")]
    assert report.dropped == {"answered without the image": 1}
    # the LLM, asked the question and options alone, answers "B": right for red (B), wrong for blue (A)
    with FakeLLM(answer=lambda body: "B") as srv:
        client = LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "c.sqlite")
        kept, dropped, _ = filter_samples([red, blue], blind=answered_by_llm(client))
        asked = srv.bodies[0]["messages"][-1]["content"]
    assert [s.id for s in kept] == ["s2"] and "A. blue\nB. red" in asked and "pool_000001" not in asked
