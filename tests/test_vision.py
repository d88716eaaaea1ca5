from dataengine.records import ImageAnnotation, ObjectAnn, TextAnn, read_jsonl
from dataengine.vision import build_vocab, patch_labels, pretrain_vision


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


def test_pretraining_lowers_the_loss(tiny_vlm, world):
    pool = read_jsonl(world.pool, ImageAnnotation)
    losses = pretrain_vision(tiny_vlm, pool, world.image_root, steps=40, batch_size=16)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
