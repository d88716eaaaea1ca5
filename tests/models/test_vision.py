from dataengine.models.vision import build_vocab, patch_labels, pretrain_vision, probe
from dataengine.records import ImageAnnotation, ObjectAnn, TextAnn, read_jsonl


def test_patch_labels_follow_the_boxes():
    ann = ImageAnnotation(image_id="a", image="a.png", width=64, height=64, setting="beach",
                          objects=[ObjectAnn(id=0, name="box", bbox=(0, 0, 31, 31), attributes=["red", "large"]),
                                   ObjectAnn(id=1, name="ball", bbox=(4, 4, 12, 12), attributes=["blue", "small"])],
                          texts=[TextAnn(text="STOP", bbox=(32, 32, 63, 47))])
    vocab = build_vocab([ann])
    lab = patch_labels(ann, 4, vocab)  # 16-px patches; centres at 8, 24, 40, 56
    assert lab["name"][0] == vocab["name"]["ball"]  # drawn last, on top of the box
    assert lab["color"][1] == vocab["color"]["red"] and lab["name"][5] == vocab["name"]["box"]
    assert lab["name"][15] == 0 and lab["text"][10] == vocab["text"]["STOP"] and lab["text"][11] == vocab["text"]["STOP"]


def test_pretraining_teaches_the_patches_what_lies_under_them(world):
    from dataengine.models.tiny import build_tiny
    from dataengine.records import Sample
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    pool = read_jsonl(world.pool, ImageAnnotation)
    vlm = build_tiny(corpus(read_jsonl(world.original, Sample)), TINY)
    pre = pretrain_vision(vlm, pool[50:], world.image_root, steps=200, batch_size=16)
    losses = pre.losses
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    scores = probe(vlm, pre, pool[:50], world.image_root)  # held-out images
    # chance is 1/4 for the row and about 1/6 for the colour
    assert scores["row"] > 0.6 and scores["color"] > 0.35, scores


def test_mask_labels_follow_the_drawn_pixels_and_add_relations():
    from dataengine.models.vision import CONTACT_STATES
    from dataengine.world.render import object_mask
    # a large ring with a small ball inside: the ring's hole is not the ring, the ball is
    ann = ImageAnnotation(image_id="a", image="a.png", width=96, height=96, setting="beach",
                          objects=[ObjectAnn(id=0, name="ring", bbox=(23, 23, 57, 57), attributes=["red", "large"]),
                                   ObjectAnn(id=1, name="ball", bbox=(31, 31, 49, 49), attributes=["blue", "small"]),
                                   ObjectAnn(id=2, name="ring", bbox=(71, 71, 89, 89), attributes=["white", "small"])])
    vocab = build_vocab([ann])
    boxes = patch_labels(ann, 6, vocab)
    masks = patch_labels(ann, 6, vocab, extra=("count", "contact"), masks=object_mask)
    centre = 2 * 6 + 2  # the patch at 32-48 px
    assert boxes["name"][centre] == masks["name"][centre] == vocab["name"]["ball"]
    assert masks["count"][centre] == 1 and masks["contact"][centre] == CONTACT_STATES.index("inside") + 1
    ring = [i for i, n in enumerate(masks["name"]) if n == vocab["name"]["ring"]]
    assert masks["count"][ring[0]] == 2 and masks["contact"][ring[0]] == CONTACT_STATES.index("contains") + 1
    assert masks["contact"][5 * 6 + 5] == 0 and masks["count"][0] == -1  # the small ring touches nothing; no object in the corner


def test_alignment_items_describe_the_pool(world):
    from dataengine.generate.align import alignment_samples, region_text
    pool = read_jsonl(world.pool, ImageAnnotation)[:20]
    both = alignment_samples(pool, "both")
    assert len(both) == len(pool) + sum(1 for a in pool if region_text(a))
    with_sign = next(a for a in read_jsonl(world.pool, ImageAnnotation) if a.texts)
    assert f'a sign reading "{with_sign.texts[0].text}" at the' in region_text(with_sign)


def test_grounding_alignment_asks_for_an_object_by_its_phrase_and_answers_where_it_is(world):
    from dataengine.generate.align import REGIONS_Q, alignment_samples
    from dataengine.qtypes.geometry import in_grid_cell
    from dataengine.qtypes.vocabulary import find_references, the_one
    pool = {a.image: a for a in read_jsonl(world.pool, ImageAnnotation)[:40]}
    items = alignment_samples(list(pool.values()), "grounding", seed=3)
    asked = [s for s in items if s.instruction != REGIONS_Q]
    assert len(items) - len(asked) == len(pool) and len(asked) >= 30
    names = {o.name for a in pool.values() for o in a.objects}
    for s in asked:
        ann = pool[s.image]
        target = the_one(find_references(ann, s.instruction, names), 0)
        assert target is not None, s.instruction  # the phrase singles out one object
        cell = s.answer.removeprefix("at the ").removesuffix(".")
        assert in_grid_cell(target.bbox, ann.width, ann.height, cell, margin=0), (s.instruction, s.answer)
    assert [s.answer for s in items] == [s.answer for s in alignment_samples(list(pool.values()), "grounding", seed=3)]
