"""DPO through TRL on the tiny models: the answer tokens TRL trains are ours, the preference is
learnt, LoRA merges back, and a stopped run resumes only its own checkpoints."""
import pytest
import torch

from dataengine.errors import DataError
from dataengine.generate.align import REGIONS_Q, region_text
from dataengine.generate.pairs import PreferencePair
from dataengine.models.vlm import VLM
from dataengine.records import ImageAnnotation, read_jsonl
from dataengine.train.config import DPOTrainConfig, LoraConfig
from dataengine.train.dpo import train_dpo
from tests.support.training import killed_at_step


@pytest.fixture
def pairs(world):
    """The true region description preferred to one with a made-up cross (none of these images has one)."""
    pool = [a for a in read_jsonl(world.pool, ImageAnnotation) if all(o.name != "cross" for o in a.objects)][:24]
    return [PreferencePair(id=f"p{i}", image=a.image, prompt=REGIONS_Q, chosen=region_text(a),
                           rejected=region_text(a).rstrip(".") + "; a large white cross at the top left.") for i, a in enumerate(pool)]


def tiny(family, pairs):
    from dataengine.models.tiny import build_tiny
    from tests.support.configs import TINY
    return build_tiny([p.chosen for p in pairs] + [p.rejected for p in pairs] + [REGIONS_Q], TINY.model_copy(update={"family": family}))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_trl_trains_the_tokens_our_own_encoding_gives(family, pairs, world):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from dataengine.generate.pairs import to_trl
    vlm = tiny(family, pairs)
    batch = DataCollatorForVisionPreference(processor=vlm.processor)(to_trl(pairs[:2], world.image_root))
    rows = batch["input_ids"].shape[0] // 2
    for i, p in enumerate(pairs[:2]):
        for row, text in ((i, p.chosen), (rows + i, p.rejected)):
            ids, mask, done = batch["input_ids"][row], batch["completion_mask"][row].bool(), batch["attention_mask"][row].bool()
            assert ids[mask].tolist() == vlm.encode_answer(text)
            prompt = vlm.encode_prompts([p.prompt], [world_image(world, p)]).ids[0]
            assert ids[done & ~mask].tolist() == prompt


def world_image(world, p):
    from dataengine.images import load_image
    return load_image(world.image_root, p.image)


def test_dpo_learns_the_preference_and_saves_a_plain_checkpoint(pairs, world, tmp_path, recwarn):
    vlm = tiny("llava", pairs)
    vision = {k: v.clone() for k, v in vlm.model.state_dict().items() if "vision_tower" in k}
    log = train_dpo(vlm, pairs, world.image_root, tmp_path / "dpo", DPOTrainConfig(epochs=3, batch_size=8, lr=2e-3))
    assert not [w for w in recwarn if "is_gradient_checkpointing" in str(w.message)]  # TRL's, kept out of the user's log
    assert log["losses"][0] == pytest.approx(0.693, abs=0.01)  # the policy starts as its reference: log 2
    assert log["losses"][-1] < 0.6 and log["rewards/margins"][-1] > 0
    after = VLM.load(tmp_path / "dpo")
    assert all(torch.equal(after.model.state_dict()[k], v) for k, v in vision.items())  # the vision tower frozen
    # the chosen side is now likelier than the rejected one, relative to where it started
    start = tiny("llava", pairs)
    item = [(world_image(world, p), p.prompt, [p.chosen, p.rejected]) for p in pairs[:8]]
    margin = lambda m: sum(s[1] - s[0] for s in m.score_options(item, reduce="sum"))  # noqa: E731
    assert margin(after) > margin(start)


def test_lora_dpo_with_an_sft_term_merges_back(pairs, world, tmp_path):
    vlm = tiny("llava", pairs)
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    log = train_dpo(vlm, pairs[:16], world.image_root, tmp_path / "lora",
                    DPOTrainConfig(epochs=1, batch_size=8, lr=1e-3, sft_weight=0.5, lora=LoraConfig(r=4, alpha=8)))
    assert log["losses"][0] > 0.693 + 0.5  # the SFT term on the chosen side adds its cross-entropy
    after = VLM.load(tmp_path / "lora").model.state_dict()
    assert set(after) == set(before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("q_proj" in k or "v_proj" in k or "k_proj" in k or "o_proj" in k or "multi_modal_projector" in k
                           for k in changed)


def test_a_stopped_dpo_resumes_only_its_own_checkpoints(pairs, world, tmp_path):
    cfg = DPOTrainConfig(epochs=1, batch_size=4, save_steps=2, sampling="sequential", lr=1e-3)  # 6 steps
    whole = train_dpo(tiny("llava", pairs), pairs, world.image_root, tmp_path / "whole", cfg)

    with killed_at_step(3):
        train_dpo(tiny("llava", pairs), pairs, world.image_root, tmp_path / "cut", cfg)
    with pytest.raises(DataError, match="cut/trainer: holds the checkpoints of a training with other data"):
        train_dpo(tiny("llava", pairs), pairs[:20], world.image_root, tmp_path / "cut", cfg)
    resumed = train_dpo(tiny("llava", pairs), pairs, world.image_root, tmp_path / "cut", cfg)
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-3)  # the whole run's log, checkpoint included
    a, b = (VLM.load(tmp_path / d).model.state_dict() for d in ("whole", "cut"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_no_pairs_or_a_broken_pair_is_refused_before_training(pairs, world, tmp_path):
    with pytest.raises(DataError, match="no preference pairs"):
        train_dpo(tiny("llava", pairs), [], world.image_root, tmp_path / "m")
    bad = pairs[0].model_copy(update={"id": "broken", "image": "pool/none.png"})
    with pytest.raises(DataError, match="pair broken: image not found"):
        train_dpo(tiny("llava", pairs), pairs[1:4] + [bad], world.image_root, tmp_path / "m")
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_the_on_policy_check_flags_a_chosen_side_the_model_would_not_write(pairs, world, tmp_path):
    """After a model has learnt to write the rejected sides, a chosen side that only leaves out the
    made-up clause is on-policy, one in words it never writes is not; the recorded figures are its
    own per-token log-probabilities."""
    import random

    from dataengine.generate.pairs import check_on_policy
    from dataengine.records import Sample
    from dataengine.train.config import TrainConfig
    from dataengine.train.sft import train
    vlm = tiny("llava", pairs)
    writes = [Sample(id=p.id, image=p.image, instruction=p.prompt, answer=p.rejected, short_answer=p.rejected, options=[],
                     choice_answer="", qtype=0) for p in pairs[:8]]
    train(vlm, writes, world.image_root, tmp_path / "sft", TrainConfig(epochs=40, lr=2e-3, batch_size=8))
    shuffled = []
    for p in pairs[:8]:
        words = p.chosen.rstrip(".").split()
        random.Random(p.id).shuffle(words)
        shuffled.append(p.model_copy(update={"id": p.id + "-x", "chosen": " ".join(words) + "."}))
    checked = check_on_policy(vlm, pairs[:8] + shuffled, world.image_root, gap=1.0)
    assert [p.off_policy for p in checked] == [False] * 8 + [True] * 8
    p = checked[0]
    from dataengine.images import load_image
    nll = vlm.score_options([(load_image(world.image_root, p.image), p.prompt, [p.chosen, p.rejected])], reduce="mean")[0]
    assert p.policy_logp == pytest.approx((-nll[0], -nll[1]), abs=1e-3)
    # a claim-level yes/no pair is scored, never marked: its chosen side is unlikely when the model answers wrong
    claim = check_on_policy(vlm, [shuffled[0].model_copy(update={"source": "hadpo-existence"})], world.image_root, gap=1.0)[0]
    assert claim.policy_logp == checked[8].policy_logp and claim.off_policy is False
    # checked pairs keep their figures (a resumed round does not score them again), and a wider gap lets more through
    assert check_on_policy(None, checked, world.image_root) == checked
    assert sum(p.off_policy for p in check_on_policy(vlm, [q.model_copy(update={"policy_logp": None}) for q in shuffled],
                                                     world.image_root, gap=1e6)) == 0


@pytest.fixture
def conditional(world):
    """mDPO pairs: a true region description, preferred with its own picture over with another's."""
    pool = read_jsonl(world.pool, ImageAnnotation)[:25]
    return [PreferencePair(id=f"c{i}", image=a.image, prompt=REGIONS_Q, chosen=region_text(a), rejected=region_text(a),
                           rejected_image=b.image, source="hadpo-conditional") for i, (a, b) in enumerate(zip(pool, pool[1:]))]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_the_rejected_half_of_a_conditional_batch_sees_the_other_picture(family, conditional, pairs, world):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from dataengine.generate.pairs import to_trl
    from dataengine.train.dpo import two_image_collator
    vlm = tiny(family, pairs + conditional)
    rows = lambda: to_trl(conditional[:2], world.image_root)  # noqa: E731  (collators change the rows they take)
    ours = two_image_collator()(processor=vlm.processor)(rows())
    trl = DataCollatorForVisionPreference(processor=vlm.processor)(rows())
    assert all(torch.equal(ours[k], trl[k]) for k in ("input_ids", "completion_mask", "attention_mask"))
    swapped = [{**r, "images": r["rejected_images"]} for r in rows()]
    other = DataCollatorForVisionPreference(processor=vlm.processor)(swapped)
    half = trl["pixel_values"].shape[0] // 2
    assert torch.equal(ours["pixel_values"][:half], trl["pixel_values"][:half])  # chosen rows: their own pictures
    assert torch.equal(ours["pixel_values"][half:], other["pixel_values"][half:])  # rejected rows: the other ones
    assert not torch.equal(ours["pixel_values"], trl["pixel_values"])


def test_conditional_dpo_learns_to_prefer_the_right_picture(conditional, pairs, world, tmp_path):
    from dataengine.images import load_image
    vlm = tiny("llava", pairs + conditional)
    start = tiny("llava", pairs + conditional)
    log = train_dpo(vlm, conditional, world.image_root, tmp_path / "mdpo", DPOTrainConfig(epochs=3, batch_size=8, lr=2e-3))
    assert log["losses"][0] == pytest.approx(0.693, abs=0.01) and log["rewards/margins"][-1] > 0

    def margin(m):  # how much likelier each description is with its own picture than with the other one
        own = m.score_options([(world_image(world, p), p.prompt, [p.chosen]) for p in conditional], reduce="sum")
        other = m.score_options([(load_image(world.image_root, p.rejected_image), p.prompt, [p.chosen]) for p in conditional],
                                reduce="sum")
        return sum(o[0] - w[0] for w, o in zip(own, other))

    assert margin(VLM.load(tmp_path / "mdpo")) > margin(start) + 1.0


def test_a_rejected_picture_of_another_size_is_refused_where_the_model_sizes_by_picture(conditional, pairs, world, tmp_path):
    from PIL import Image
    p = conditional[0]
    (tmp_path / "pool").mkdir()
    Image.open(world.image_root / p.image).save(tmp_path / p.image)
    Image.open(world.image_root / p.rejected_image).resize((64, 256)).save(tmp_path / p.rejected_image)
    # LLaVA resizes every picture to one size: it trains; Qwen2-VL's image tokens follow the size: refused first
    train_dpo(tiny("llava", pairs + conditional), [p], tmp_path, tmp_path / "llava", DPOTrainConfig(epochs=1, batch_size=1))
    with pytest.raises(DataError, match=f"pair {p.id}: its pictures .* give this model image inputs of different sizes"):
        train_dpo(tiny("qwen2_vl", pairs + conditional), [p], tmp_path, tmp_path / "qwen", DPOTrainConfig(epochs=1, batch_size=1))
    assert not (tmp_path / "qwen" / "model.safetensors").exists()
