import torch
from PIL import Image

from dataengine.models.vlm import VLM


def test_save_and_load_round_trip(tiny_vlm, tmp_path):
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    before = tiny_vlm.score_options([(img, "What color is the ball?", ["red", "blue", "green", "black"])])
    tiny_vlm.save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    (tmp_path / "plain.txt").write_text("x")  # every file of the model is as readable as any file written here
    assert {f.stat().st_mode & 0o777 for f in (tmp_path / "m").iterdir()} == {(tmp_path / "plain.txt").stat().st_mode & 0o777}
    loaded = VLM.load(tmp_path / "m")
    after = loaded.score_options([(img, "What color is the ball?", ["red", "blue", "green", "black"])])
    assert [round(x, 4) for x in before[0]] == [round(x, 4) for x in after[0]]


def test_prompt_expands_the_image_and_answer_is_masked(tiny_vlm):
    img = Image.new("RGB", (64, 64))
    batch = tiny_vlm.encode_batch(["How many stars are there in the image?", "What is it?"], [img, img], ["two", "a red ball"])
    image_id = tiny_vlm.tokenizer.image_token_id
    assert (batch["input_ids"][0] == image_id).sum() == (64 // 16) ** 2
    assert batch["pixel_values"].shape[0] == 2
    answer = [t for t in batch["labels"][0].tolist() if t != -100]
    assert tiny_vlm.tokenizer.decode(answer, skip_special_tokens=True).strip() == "two"
    assert answer[-1] == tiny_vlm.tokenizer.eos_token_id


def test_batched_scores_equal_single_scores(tiny_vlm):
    a, b = Image.new("RGB", (64, 64), (0, 0, 200)), Image.new("RGB", (64, 64), (0, 200, 0))
    items = [(a, "What color is the box?", ["red", "blue", "green", "black"]),
             (b, "How many rings are there in the image?", ["one", "two", "three", "four"])]
    together = tiny_vlm.score_options(items)
    alone = [tiny_vlm.score_options([it])[0] for it in items]
    for x, y in zip(together, alone):
        assert [round(v, 4) for v in x] == [round(v, 4) for v in y]


def test_shared_prefix_scoring_matches_full_passes(tiny_vlm, world):
    from dataengine.benchmarks.seed import read_seed
    from dataengine.images import load_image
    qs = read_seed(world.benchmark)[:10]
    # uneven option counts (MMBench has 2-4) and prompts of different lengths in one batch
    items = [(load_image(world.image_root, q.image), q.question, q.options[: 2 + i % 3]) for i, q in enumerate(qs)]
    for reduce in ("mean", "sum"):
        full = tiny_vlm.score_options(items, reduce, shared_prefix=False)
        shared = tiny_vlm.score_options(items, reduce, shared_prefix=True)
        assert [len(x) for x in shared] == [2 + i % 3 for i in range(10)]
        for a, b in zip(full, shared):
            assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    assert tiny_vlm.model.config.model_type == "llava"  # so the evaluator uses the shared path by default


import pytest  # noqa: E402


@pytest.mark.parametrize("family", ["llava_next", "idefics3", "qwen2_vl", "qwen2_5_vl", "paligemma"])
def test_other_families_load_score_generate_and_train(family, world, tmp_path):
    from dataengine.benchmarks.seed import read_seed
    from dataengine.evaluate import run_evaluate
    from dataengine.images import load_image
    from dataengine.models.families import FAMILIES
    from dataengine.models.tiny import build_tiny
    from dataengine.models.vlm import VLM
    from dataengine.records import Sample, read_jsonl
    from dataengine.train.config import LoraConfig, TrainConfig
    from dataengine.train.sft import train
    from dataengine.world.build import corpus
    from tests.support.configs import TINY

    data = read_jsonl(world.original, Sample)
    build_tiny(corpus(data), TINY.model_copy(update={"family": family})).save(tmp_path / "m")
    vlm = VLM.load(tmp_path / "m")
    assert vlm.model.config.model_type == family
    qs = read_seed(world.benchmark)[:6]
    items = [(load_image(world.image_root, q.image), q.question, q.options[: 2 + i % 3]) for i, q in enumerate(qs)]
    full = vlm.score_options(items, shared_prefix=False)
    # each item's image inputs go with its own options (Qwen2-VL's flattened patches included)
    alone = [vlm.score_options([it], shared_prefix=False)[0] for it in items[:3]]
    assert all(abs(x - y) < 1e-4 for a, b in zip(full, alone) for x, y in zip(a, b))
    if FAMILIES.get(family).shared_prefix:
        shared = vlm.score_options(items, shared_prefix=True)
        assert all(abs(x - y) < 1e-4 for a, b in zip(full, shared) for x, y in zip(a, b))
    # the answer is causal: what follows an answer token cannot change its score (PaliGemma's prefix
    # is bidirectional, so its answer tokens must be marked as the suffix)
    batch = vlm.encode_batch([qs[0].question] * 2, [items[0][0]] * 2, ["red square", "red circle"])
    first = (batch["labels"][0] != -100).nonzero()[0].item()
    logits = vlm.model(**vlm.on_device({k: v for k, v in batch.items() if k != "labels"})).logits
    assert torch.allclose(logits[0, first - 1], logits[1, first - 1], atol=1e-5)
    assert torch.allclose(logits[0, first], logits[1, first], atol=1e-5)  # "red" in both
    assert len(vlm.generate([(items[0][0], items[0][1]), (items[1][0], items[1][1])], max_new_tokens=3)) == 2
    lora = LoraConfig(r=4, alpha=8) if family in ("idefics3", "qwen2_vl") else None
    log = train(vlm, data[:16], world.image_root, tmp_path / "ft", TrainConfig(epochs=1, batch_size=8, lora=lora, freeze_vision=True))
    assert log["steps"] == 2 and all(x == x for x in log["losses"])  # no NaN
    res = run_evaluate(VLM.load(tmp_path / "ft"), qs, world.image_root, tmp_path / "ev")
    assert res.total == 6


def test_unsupported_model_type_is_refused(tmp_path):
    from dataengine.errors import DataError
    (tmp_path / "blip").mkdir()
    (tmp_path / "blip" / "config.json").write_text('{"model_type": "blip-2"}')
    with pytest.raises(DataError, match="model type 'blip-2' is not supported"):
        VLM.load(tmp_path / "blip")
