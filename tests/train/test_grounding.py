import math

import pytest
import torch

from dataengine.errors import DataError
from dataengine.generate import GroundedGenerator, generate
from dataengine.images import load_image
from dataengine.records import ImageAnnotation, ObjectAnn, Sample, TextAnn, read_jsonl
from dataengine.train.config import TrainConfig
from dataengine.train.grounding import attention_loss, covered, grounding_targets, named_patches
from dataengine.train.sft import Collator, train
from dataengine.world.render import VOCABULARY

SCENE = ImageAnnotation(image_id="a", image="a.png", width=64, height=64, objects=[
    ObjectAnn(id=0, name="ring", bbox=[0, 0, 32, 32], attributes=["blue"]),
    ObjectAnn(id=1, name="ring", bbox=[32, 32, 64, 64], attributes=["red"]),
    ObjectAnn(id=2, name="star", bbox=[40, 0, 64, 16], attributes=["red"])])


def test_a_wide_picture_is_cropped_to_its_centre_as_the_processor_does():
    wide = ImageAnnotation(image_id="w", image="w.png", width=128, height=64, objects=[
        ObjectAnn(id=0, name="ring", bbox=[0, 0, 31, 64], attributes=["blue"]),  # cropped away
        ObjectAnn(id=1, name="star", bbox=[32, 0, 64, 32], attributes=["red"])])  # the kept square's top left
    assert named_patches(wide, "Where is the blue ring?", 4) == []
    assert named_patches(wide, "Where is the red star?", 4) == [("star", [0, 1, 4, 5])]


def test_covered_takes_the_patches_a_box_mostly_covers():
    assert covered([0, 0, 32, 32], 4, 64) == [0, 1, 4, 5]
    assert covered([0, 0, 20, 16], 4, 64) == [0]  # 4 of the second patch's 16 columns: 25%, not taken
    assert covered([0, 0, 22, 16], 4, 64) == [0, 1]  # 6 of 16: 37.5%
    assert covered([0, 0, 32, 16], 4, 64, 32) == [0, 1, 4, 5]  # a wide image: patches are 16 x 8


def test_named_patches_are_those_of_the_objects_each_phrase_names():
    assert named_patches(SCENE, "Where is the blue ring in the image?", 4) == [("ring", [0, 1, 4, 5])]
    # "the ring" may be either ring: both are its patches
    assert named_patches(SCENE, "Where is the ring relative to the star?", 4) == [("ring", [0, 1, 4, 5, 10, 11, 14, 15]),
                                                                                 ("star", [2, 3])]
    assert named_patches(SCENE, "How many rings are there in the image?", 4) == [("rings", [0, 1, 4, 5, 10, 11, 14, 15])]
    assert named_patches(SCENE, "What is the blue object in the image?", 4) == [("blue object", [0, 1, 4, 5])]
    assert named_patches(SCENE, "What is the contact between the star and the blue ring?", 4) == [("star", [2, 3]),
                                                                                                   ("ring", [0, 1, 4, 5])]
    assert named_patches(SCENE, "What is the setting of the image?", 4) == []
    # POPE's question: every object of the name, or nothing to look at when there is none
    assert named_patches(SCENE, "Is there a ring in the image?", 4) == [("ring", [0, 1, 4, 5, 10, 11, 14, 15])]
    assert named_patches(SCENE, "Is there a cross in the image?", 4) == []
    # each phrase at its own words, in the question's order, even where two share a name
    assert named_patches(SCENE, "Is there a ring left of the blue ring?", 4) == [("ring", [0, 1, 4, 5, 10, 11, 14, 15]),
                                                                               ("ring", [0, 1, 4, 5])]
    assert named_patches(SCENE, "Is the blue ring left of a ring?", 4) == [("ring", [0, 1, 4, 5]),
                                                                         ("ring", [0, 1, 4, 5, 10, 11, 14, 15])]
    assert named_patches(SCENE, "Is the red star or the Blue Object bigger?", 4) == [("star", [2, 3]),
                                                                                   ("Blue Object", [0, 1, 4, 5])]
    assert named_patches(SCENE, "What color is the Star?", 4) == [("Star", [2, 3])]  # as written: its tokens are those
    # across a word: no phrase ("cross" is not a name here, and "across" would not be it)
    assert named_patches(SCENE, "Is the star across from the blue ring?", 4) == [("star", [2, 3]), ("ring", [0, 1, 4, 5])]
    assert named_patches(SCENE, "What word is written on the sign?", 4) == []  # no text in the picture
    signed = SCENE.model_copy(update={"texts": [TextAnn(text="OPEN", bbox=[32, 48, 64, 64])]})
    assert named_patches(signed, "What word is written on the sign?", 4) == [("sign", [14, 15])]


# one item: tokens 0-3 are patches (9), 4-7 the question "the blue ring ?" (5 6 7 2), 8-9 the answer (3, then 4: the end)
IDS = torch.tensor([[9, 9, 9, 9, 5, 6, 7, 2, 3, 4]])
LABELS = torch.tensor([[-100] * 8 + [3, 4]])


def test_grounding_targets_mark_the_phrase_and_the_answer_positions():
    t = grounding_targets(IDS, LABELS, 9, 2, 2, [[([7], [1, 2])]])
    # head 0 at "ring" and at the question's last token, which predicts the answer (not at the
    # answer's last token: it predicts the end); head 1, the second half, stays free
    assert t[0, 0].nonzero().tolist() == [[6, 1], [6, 2], [7, 1], [7, 2]]
    assert not t[0, 1].any()
    t = grounding_targets(IDS, LABELS, 9, 2, 2, [[([6, 7], [3])]])  # a name of two tokens: its last
    assert t[0, 0].nonzero().tolist() == [[6, 3], [7, 3]]
    assert not grounding_targets(IDS, LABELS, 9, 2, 2, [[]]).any()
    assert grounding_targets(IDS, LABELS, 9, 2, 2, [[([8], [1])]])[0, :, :7].sum() == 0  # a name not in the question: answer rows only
    with pytest.raises(DataError, match="one image token per patch"):
        grounding_targets(IDS, LABELS, 9, 2, 3, [[([7], [7])]])  # 4 image tokens for 3 x 3 patches


def test_a_name_before_the_image_gets_no_row_it_could_not_learn():
    # the question first: "ring" (7) at position 1, then the image (9), then the answer
    ids = torch.tensor([[5, 7, 9, 9, 9, 9, 2, 3, 4]])
    labels = torch.tensor([[-100] * 7 + [3, 4]])
    t = grounding_targets(ids, labels, 9, 2, 2, [[([7], [1])]])
    assert t[0, 0].nonzero().tolist() == [[6, 3]]  # the answer's row only, on patch 1 (token 3)


def test_two_phrases_share_the_first_half_of_the_heads_at_the_answer():
    t = grounding_targets(IDS, LABELS, 9, 4, 2, [[([6], [0]), ([7], [3])]])  # "blue" and "ring" as two names
    assert t[0, 0, 5].nonzero().flatten().tolist() == [0] and t[0, 0, 6].nonzero().flatten().tolist() == [3]
    assert [t[0, h, 7].nonzero().flatten().tolist() for h in range(4)] == [[0], [3], [], []]
    t = grounding_targets(IDS, LABELS, 9, 8, 2, [[([7], [3])]])  # one phrase, 8 heads: 4 held, 4 free
    assert [bool(t[0, h, 7].any()) for h in range(8)] == [True] * 4 + [False] * 4
    for heads in (2, 3):  # too few heads for half to cover both phrases: one each, the rest free
        t = grounding_targets(IDS, LABELS, 9, heads, 2, [[([6], [0]), ([7], [3])]])
        assert [t[0, h, 7].nonzero().flatten().tolist() for h in range(heads)] == [[0], [3], []][:heads]


def test_attention_loss_is_zero_on_the_named_patches_and_log_n_when_spread():
    targets = grounding_targets(IDS, LABELS, 9, 2, 2, [[([7], [1, 2])]])
    focused = torch.zeros(1, 2, 10, 10)
    focused[..., 1] = 1.0
    spread = torch.full((1, 2, 10, 10), 1 / 10)
    assert attention_loss((spread, focused), targets).item() == pytest.approx(0.0, abs=1e-5)  # layer 0 left out
    assert attention_loss((focused, spread), targets).item() == pytest.approx(math.log(10 / 2), rel=1e-4)
    # rows without targets do not count; at a phrase's name only the first head is held to it
    free = focused.clone()
    free[:, :, 8:] = 1 / 10
    free[:, :, :6] = 1 / 10
    free[:, 1, 6] = 1 / 10
    assert attention_loss((free, free), targets).item() == pytest.approx(0.0, abs=1e-5)
    free[:, 0, 6] = 1 / 10
    assert attention_loss((free, free), targets).item() > 0.1
    free[:, 0, 6], free[:, 0, 7] = 0, 1 / 10
    free[:, 0, 6, 1] = 1.0
    assert attention_loss((free, free), targets).item() > 0.1  # at the answer the first head is held to it
    free[:, 0, 7], free[:, 1, 7] = 0, 1 / 10
    free[:, 0, 7, 2] = 1.0
    assert attention_loss((free, free), targets).item() == pytest.approx(0.0, abs=1e-5)  # the second is free
    assert attention_loss((spread, spread), grounding_targets(IDS, LABELS, 9, 2, 2, [[]])) is None


def _location(world, n):
    pool = read_jsonl(world.pool, ImageAnnotation)
    items = generate({4: n}, pool, GroundedGenerator(VOCABULARY, source="t"), seed=0)
    anns = {a.image: a for a in pool}
    return [s for s in items if len(anns[s.image].objects) >= 2], pool


@torch.no_grad()
def _named_mass(vlm, items, pool, image_root) -> float:
    """Mean attention, at the phrase's name and the positions that predict the answer, on the named object's patches."""
    vlm.model.set_attn_implementation("eager")
    col = Collator(vlm, "short_answer", {a.image: a for a in pool})
    enc = col([(s, load_image(image_root, s.image)) for s in items])
    targets = enc.pop("grounding")
    out = vlm.model(**enc, output_attentions=True)
    vlm.model.set_attn_implementation("sdpa")
    return math.exp(-attention_loss(out.attentions, targets).item())


def test_training_with_attention_grounding_turns_attention_to_the_named_object(world, tmp_path):
    from dataengine.models.tiny import build_tiny
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    items, pool = _location(world, 120)
    assert len(items) >= 40
    mass = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        vlm = build_tiny(corpus(read_jsonl(world.original, Sample)), TINY.model_copy(update={"text_layers": 2}))
        train(vlm, items, world.image_root, tmp_path / f"w{weight}", TrainConfig(epochs=3, batch_size=8, lr=1e-3,
              ground_attention=weight), annotations=pool)
        assert vlm.model.config.text_config._attn_implementation != "eager"  # put back after training
        mass[weight] = _named_mass(vlm, items[:24], pool, world.image_root)
    assert mass[1.0] > 2 * mass[0.0], mass


def test_attention_grounding_without_annotations_is_refused(tiny_vlm, world, tmp_path):
    items, _ = _location(world, 20)
    with pytest.raises(DataError, match="ground_attention needs .* annotations"):
        train(tiny_vlm, items, world.image_root, tmp_path / "m", TrainConfig(ground_attention=1.0))


def test_gradient_accumulation_weighs_grounded_batches_as_the_trainer_does(world, tmp_path):
    """A grounded batch's loss is scaled for accumulation like any other (a weight near 0 changes nothing)."""
    from dataengine.models.tiny import build_tiny
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    items, pool = _location(world, 60)
    losses = {}
    for weight in (0.0, 1e-9):
        vlm = build_tiny(corpus(read_jsonl(world.original, Sample)), TINY)
        log = train(vlm, items[:16], world.image_root, tmp_path / f"a{weight}",
                    TrainConfig(epochs=1, batch_size=4, grad_accum=2, lr=1e-3, ground_attention=weight), annotations=pool)
        losses[weight] = log["losses"]
    assert losses[1e-9] == pytest.approx(losses[0.0], rel=1e-3), losses


def test_attention_grounding_refuses_what_it_cannot_ground(tiny_vlm, world, tmp_path):
    from dataengine.models.tiny import build_tiny
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    items, pool = _location(world, 20)
    cfg = TrainConfig(ground_attention=1.0)
    with pytest.raises(DataError, match="no item's image has an annotation"):
        train(tiny_vlm, items, world.image_root, tmp_path / "m", cfg, annotations=[])
    assert tiny_vlm.model.config.text_config._attn_implementation != "eager"
    qwen = build_tiny(corpus(read_jsonl(world.original, Sample)), TINY.model_copy(update={"family": "qwen2_vl"}))
    with pytest.raises(DataError, match="needs LLaVA's layout"):
        train(qwen, items, world.image_root, tmp_path / "q", cfg, annotations=pool)


def test_items_that_name_no_object_train_with_the_fused_attention(tiny_vlm, world, tmp_path, monkeypatch):
    """Scene questions (and captions) give grounding nothing to hold, so the plain trainer runs,
    without switching the model to the slow eager attention."""
    pool = read_jsonl(world.pool, ImageAnnotation)
    scene = generate({1: 12}, pool, GroundedGenerator(VOCABULARY, source="t"), seed=0)
    grid = tiny_vlm.model.config.vision_config.image_size // tiny_vlm.model.config.vision_config.patch_size
    anns = {a.image: a for a in pool}
    assert scene and not any(named_patches(anns[s.image], s.instruction, grid) for s in scene)
    switched = []
    set_attn = tiny_vlm.model.set_attn_implementation
    monkeypatch.setattr(tiny_vlm.model, "set_attn_implementation", lambda impl: (switched.append(impl), set_attn(impl)))
    fused = tiny_vlm.model.config._attn_implementation
    log = train(tiny_vlm, scene, world.image_root, tmp_path / "m", TrainConfig(epochs=1, ground_attention=1.0), annotations=pool)
    assert log["steps"] >= 1 and switched == []
    location, _ = _location(world, 12)
    train(tiny_vlm, location, world.image_root, tmp_path / "l", TrainConfig(epochs=1, ground_attention=1.0), annotations=pool)
    assert switched == ["eager", fused]  # and put back after
