import numpy as np
import pytest

from dataengine.benchmarks.seed import read_seed
from dataengine.embed import (
    AnnotationText,
    get_embedder,
    near_duplicates,
    similar_and_random,
)
from dataengine.filter import BenchmarkGuard, filter_samples
from dataengine.records import ImageAnnotation, Prediction, Sample, read_jsonl
from dataengine.sample import plan


@pytest.fixture(scope="module")
def minilm():
    return get_embedder("minilm")


def test_minilm_finds_paraphrases_not_neighbours(minilm):
    texts = ["How many dogs are in the picture?", "How many dogs are there in the picture?",
             "What color is the car parked by the road?", "Which word is written on the sign?"]
    assert near_duplicates(texts, minilm, 0.9) == {1: "near duplicate"}
    # grouped by image: the same question about another image is not a duplicate
    assert near_duplicates(texts, minilm, 0.9, groups=["a", "b", "a", "a"]) == {}
    assert near_duplicates(texts[2:], minilm, 0.9, against=["What colour is the car parked by the road?"]) == \
        {0: "near duplicate of a benchmark question"}


def test_filter_drops_near_duplicates_of_each_other_and_of_the_benchmark(world, minilm):
    questions = read_seed(world.benchmark)
    guard = BenchmarkGuard(questions, world.image_root)
    q = questions[0]
    correct = q.options["ABCD".index(q.answer)]
    copied = Sample(id="c", image="pool/pool_000003.png", instruction=q.question + " ", answer=f"It is {correct}.",
                    short_answer=correct, options=q.options, choice_answer=q.answer, qtype=q.qtype)
    fresh = Sample(id="f", image="pool/pool_000004.png", instruction="Which season does this scene suggest?",
                   answer="Winter.", short_answer="winter", options=["winter", "summer", "spring", "autumn"],
                   choice_answer="A", qtype=1)
    twin = fresh.model_copy(update={"id": "t", "instruction": "Which season does the scene suggest?"})
    kept, dropped, report = filter_samples([copied, fresh, twin], guard, embedder=minilm, scope="global")
    assert [s.id for s in kept] == ["f"]
    assert {s.id: r for s, r in dropped} == {"c": "near duplicate of a benchmark question", "t": "near duplicate"}
    assert report.dropped == {"near duplicate": 1, "near duplicate of a benchmark question": 1}
    # per image (the default): the paraphrase about the same image is dropped, about another image kept
    kept, _, _ = filter_samples([fresh, twin], guard, embedder=minilm)
    assert [s.id for s in kept] == ["f"]
    elsewhere = twin.model_copy(update={"image": "pool/pool_000005.png"})
    kept, _, _ = filter_samples([fresh, elsewhere], guard, embedder=minilm)
    assert [s.id for s in kept] == ["f", "t"]


def test_bad_cases_are_deduplicated_by_embedding(minilm):
    def bad(i, q):
        return Prediction(question_id=str(i), qtype=3, image=f"{i}.png", question=q, options=["red", "blue", "green", "gray"],
                          answer="A", prediction="B", correct=False)
    cases = [bad(0, "What color is the ball?"), bad(1, "What colour is the ball?"), bad(2, "What is the color of the box?")]
    p = plan({3: 0.5}, cases, 10, examples_per_type=10, embedder=minilm)
    assert sorted(e.question_id for e in p.types[3].examples) in (["0", "2"], ["1", "2"])


def test_half_of_the_images_are_the_most_like_the_bad_cases(world, minilm):
    pool = read_jsonl(world.pool, ImageAnnotation)[:200]
    images = AnnotationText(minilm)
    emb = images.embed_images(pool)
    bad = [Prediction(question_id="1", qtype=9, image="b.png", question="What word is written on the sign?",
                      options=["SALE", "EXIT", "OPEN", "STOP"], answer="A", prediction="B", correct=False)]
    order = similar_and_random(emb, images.embed_queries(bad), 10, seed=0)
    assert sorted(order) == list(range(len(pool)))  # every image once
    similar, rand = order[0:20:2], order[1:20:2]
    signs = lambda idx: sum(bool(pool[i].texts) for i in idx)  # noqa: E731
    assert signs(similar) == 10 and signs(similar) > signs(rand)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
