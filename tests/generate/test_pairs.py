"""Preference pairs from judged descriptions: what they hold, TRL's format, the Hugging Face round trip."""
import pytest

from dataengine.errors import DataError
from dataengine.generate.hallucination import Judged, detect
from dataengine.generate.pairs import (
    PreferencePair,
    check_pairs,
    export_pairs_hf,
    import_pairs_hf,
    make_pairs,
    plain_style,
    to_trl,
)
from dataengine.records import read_jsonl
from dataengine.world.render import CATEGORIES


def judged_of(pool, texts):
    return [Judged(id=f"d{i}", image=a.image, prompt="Describe.", text=t, sentences=detect(t, a, CATEGORIES))
            for i, (a, t) in enumerate(zip(pool, texts))]


@pytest.fixture
def pool(world):
    from dataengine.records import ImageAnnotation
    return read_jsonl(world.pool, ImageAnnotation)[:6]


def test_a_pair_differs_in_facts_only(pool):
    from dataengine.generate.align import region_text
    truths = [region_text(a) for a in pool]
    wrong = [t.rstrip(".") + "; a large purple cross at the bottom right." if "cross" not in t else t for t in truths]
    pairs = make_pairs(judged_of(pool, wrong), {a.image: a for a in pool}, CATEGORIES)
    hallucinated = [i for i, (t, w) in enumerate(zip(truths, wrong)) if t != w]
    assert len(pairs) == len(hallucinated) > 0  # a description with nothing false makes no pair
    for p in pairs:
        assert p.rejected.endswith("a large purple cross at the bottom right.")
        assert p.chosen != p.rejected and p.reasons == ["no cross in the image"]
        assert p.chosen[0] == p.rejected[0] == "a" and p.chosen.endswith(".")  # the model's style, both sides
        ann = next(a for a in pool if a.image == p.image)
        assert all(v.verdict == "correct" for v in detect(p.chosen, ann, CATEGORIES))
    assert plain_style("  a  ball\nat the top ") == "a ball at the top."  # the model's own case kept: on-policy


def test_pairs_load_into_trl_and_round_trip_through_a_hf_dataset(pool, world, tmp_path):
    pairs = [PreferencePair(id=f"p{i}", image=a.image, prompt="Describe.", chosen="A ball.", rejected="A star.",
                            reasons=["no star in the image"]) for i, a in enumerate(pool[:3])]
    rows = to_trl(pairs, world.image_root)
    assert rows[0]["prompt"][0]["content"][0] == {"type": "image"} and rows[0]["chosen"][0]["role"] == "assistant"
    assert rows[0]["images"][0].size == (64, 64)
    from trl.data_utils import is_conversational
    assert is_conversational(rows[0])
    export_pairs_hf(pairs, world.image_root, tmp_path / "hf")
    back = import_pairs_hf(tmp_path / "hf", tmp_path / "images")
    assert back == pairs and (tmp_path / "images" / pairs[0].image).read_bytes() == (world.image_root / pairs[0].image).read_bytes()


def test_bad_pairs_are_named(pool, world, tmp_path):
    good = PreferencePair(id="p1", image=pool[0].image, prompt="Describe.", chosen="A ball.", rejected="A star.")
    with pytest.raises(DataError, match="pairs: no preference pairs"):
        check_pairs([], world.image_root)
    with pytest.raises(DataError, match="pair p2: an empty chosen side"):
        check_pairs([good, good.model_copy(update={"id": "p2", "chosen": " "})], world.image_root)
    with pytest.raises(DataError, match="missing.png: pair p3: image not found"):
        check_pairs([good.model_copy(update={"id": "p3", "image": "missing.png"})], world.image_root)
    (tmp_path / "pairs.jsonl").write_text('{"id": "p4", "image": "x.png", "prompt": "Describe.", "chosen": "A ball."}\n')
    with pytest.raises(DataError, match="pairs.jsonl: line 1: rejected: Field required"):
        read_jsonl(tmp_path / "pairs.jsonl", PreferencePair)
    j = judged_of(pool[:1], ["A large purple cross."])[0].model_copy(update={"image": "elsewhere.png"})
    with pytest.raises(DataError, match="description d0: image elsewhere.png is not in the pool"):
        make_pairs([j], {a.image: a for a in pool}, CATEGORIES)


def test_existence_pairs_ask_about_each_named_object_balanced(pool):
    from dataengine.generate.pairs import existence_pairs
    a = next(x for x in pool if len({o.name for o in x.objects}) >= 2)
    present = sorted({o.name for o in a.objects})
    absent = [n for n in CATEGORIES if n not in present]
    text = f"a {present[0]} at the top left; a {absent[0]} at the center; a {present[1]} here; a {absent[1]} there."
    pairs = existence_pairs(judged_of([a], [text]), {a.image: a}, CATEGORIES)
    no = {p.prompt: p for p in pairs if p.chosen == "no"}
    yes = {p.prompt: p for p in pairs if p.chosen == "yes"}
    assert set(no) == {f"Is there a {absent[0]} in the image?", f"Is there a {absent[1]} in the image?"}
    assert all(p.rejected == "yes" and p.reasons == [f"no {p.prompt.split()[3]} in the image"] for p in no.values())
    assert len(yes) == 2 and set(yes) <= {f"Is there a {n} in the image?" for n in present}
    # fewer hallucinated objects than real ones: the yes side is cut to as many as the no side
    one_wrong = f"a {present[0]} at the top left; a {present[1]} here; a {absent[0]} there."
    assert [p.chosen for p in existence_pairs(judged_of([a], [one_wrong]), {a.image: a}, CATEGORIES)] == ["no", "yes"]
    # a name the annotation may have missed on this image is no claim either way
    loose = a.model_copy(update={"inexhaustive": [absent[0]]})
    assert {p.prompt for p in existence_pairs(judged_of([loose], [text]), {a.image: loose}, CATEGORIES) if p.chosen == "no"} \
        == {f"Is there a {absent[1]} in the image?"}


def test_conditional_pairs_show_the_chosen_side_with_a_picture_it_is_false_on(world, tmp_path):
    """mDPO's image-conditioned pairs: the same chosen text on both sides, the rejected one shown
    another described image on which the grounded annotation makes it false."""
    from dataengine.generate.align import region_text
    from dataengine.generate.pairs import conditional_pairs, existence_pairs
    from dataengine.records import ImageAnnotation
    pool = read_jsonl(world.pool, ImageAnnotation)[:40]
    by_image = {a.image: a for a in pool}
    wrong = [region_text(a).rstrip(".") + "; a large purple cross at the bottom right." for a in pool[:8]]
    base = make_pairs(judged_of(pool[:8], wrong), by_image, CATEGORIES)
    base += existence_pairs(judged_of(pool[:8], wrong), by_image, CATEGORIES)
    assert {p.source for p in base} == {"hadpo", "hadpo-existence"}
    cond = conditional_pairs(base, by_image, CATEGORIES)
    assert len(cond) == len(base) and len({p.id for p in cond}) == len(cond)
    for c, p in zip(cond, base):
        assert c.chosen == c.rejected == p.chosen and c.image == p.image and c.source == "hadpo-conditional"
        other = by_image[c.rejected_image]
        assert c.rejected_image != c.image
        if p.source == "hadpo-existence":
            name = p.prompt.split()[3]
            assert (name in {o.name for o in other.objects}) == (p.chosen == "no")  # the answer flips there
        else:
            assert any(v.verdict == "hallucinated" for v in detect(c.chosen, other, CATEGORIES))
    assert conditional_pairs(base, by_image, CATEGORIES) == cond  # the same other picture every time
    # a pool without a contradicting picture gives none; conditional pairs are not conditioned again
    assert conditional_pairs(base[:1], {base[0].image: by_image[base[0].image]}, CATEGORIES) == []
    assert conditional_pairs(cond, by_image, CATEGORIES) == []
    # TRL rows carry the rejected side's picture only when some pair has one
    rows = to_trl(base[:1] + cond[:1], world.image_root)
    assert rows[0]["rejected_images"][0] is rows[0]["images"][0]
    assert rows[1]["rejected_images"][0].tobytes() != rows[1]["images"][0].tobytes()
    assert "rejected_images" not in to_trl(base[:1], world.image_root)[0]
    export_pairs_hf(base[:2] + cond[:2], world.image_root, tmp_path / "hf")
    back = import_pairs_hf(tmp_path / "hf", tmp_path / "images")
    assert back == base[:2] + cond[:2]
    assert (tmp_path / "images" / cond[0].rejected_image).read_bytes() == (world.image_root / cond[0].rejected_image).read_bytes()
    with pytest.raises(DataError, match="missing.png: pair c: image not found"):
        check_pairs([cond[0].model_copy(update={"id": "c", "rejected_image": "missing.png"})], world.image_root)
    with pytest.raises(DataError, match="pair c: its rejected_image is its own image"):
        check_pairs([cond[0].model_copy(update={"id": "c", "rejected_image": cond[0].image})], world.image_root)
    assert {c.id for c in cond} == {f"cond-{p.id}" for p in base}
