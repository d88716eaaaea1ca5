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
