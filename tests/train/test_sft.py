from dataengine.models.vlm import VLM
from dataengine.records import Sample, read_jsonl
from dataengine.train.config import LoraConfig, TrainConfig
from dataengine.train.sft import train


def test_short_training_lowers_the_loss(tiny_vlm, world, tmp_path):
    data = read_jsonl(world.original, Sample)
    log = train(tiny_vlm, data, world.image_root, tmp_path / "m", TrainConfig(epochs=3, batch_size=8, lr=1e-3))
    first, last = log["losses"][0], log["losses"][-1]
    assert last < 0.7 * first, log["losses"]
    assert (tmp_path / "m" / "model.safetensors").exists() and (tmp_path / "m" / "train_log.json").exists()
    VLM.load(tmp_path / "m")  # loads back as a plain checkpoint


def test_lora_trains_and_merges(world, tmp_path):
    from dataengine.models.tiny import build_tiny
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    data = read_jsonl(world.original, Sample)
    vlm = build_tiny(corpus(data), TINY)
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    log = train(vlm, data[:32], world.image_root, tmp_path / "lora",
                TrainConfig(epochs=1, batch_size=8, lora=LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])))
    after = VLM.load(tmp_path / "lora").model.state_dict()
    assert set(after) == set(before)  # merged: plain weights, no adapter keys
    changed = [k for k in before if not (before[k] == after[k]).all()]
    # adapters only in the language model, merged back; the projector trained fully; the vision tower untouched
    assert any("language_model" in k and "q_proj" in k for k in changed)
    assert any("multi_modal_projector" in k for k in changed)
    assert not [k for k in changed if "vision_tower" in k]
    assert all(("q_proj" in k or "v_proj" in k or "multi_modal_projector" in k) for k in changed)
    assert log["steps"] == 4


def test_presets_carry_the_papers_settings_and_explicit_fields_win():
    import pytest
    from pydantic import ValidationError

    from dataengine.train.config import TrainConfig

    c = TrainConfig(preset="llava-1.5-lora")
    assert (c.lora.r, c.lora.alpha, c.lr, c.vision_lr, c.warmup_ratio, c.epochs, c.scheduler) == (128, 256, 1e-4, 2e-5, 0.03, 1.0, "cosine")
    assert TrainConfig(preset="llava-1.5-lora", lr=3e-4).lr == 3e-4
    assert TrainConfig(preset="llava-1.5-full").lora is None and TrainConfig(preset="minigpt4-lora").lora.r == 64
    with pytest.raises(ValidationError, match="unknown preset 'llava-2'"):
        TrainConfig(preset="llava-2")


def test_preset_from_the_run_config(tmp_path):
    from dataengine.config import load_config
    (tmp_path / "c.yaml").write_text("train: {preset: llava-1.5-lora, epochs: 2}\n")
    t = load_config(tmp_path / "c.yaml").train
    assert t.lora.r == 128 and t.epochs == 2 and t.original_fraction == 0.25


def test_large_model_options_reach_the_trainer(tmp_path):
    from dataengine.train.config import TrainConfig
    from dataengine.train.sft import training_args
    cfg = TrainConfig(fsdp=True, fsdp_config={"min_num_params": 1000, "cpu_offload": True}, gradient_checkpointing=True,
                      grad_accum=4)
    args = training_args(cfg, tmp_path, steps=10, device="cpu")
    assert args.fsdp and args.fsdp_config["min_num_params"] == 1000 and args.fsdp_config["cpu_offload"]
    assert getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", None)
    assert args.gradient_accumulation_steps == 4 and args.deepspeed is None
    plain = training_args(TrainConfig(), tmp_path, steps=10, device="cpu")
    assert not plain.fsdp and not plain.fsdp_config


import pytest  # noqa: E402

from tests.support.training import killed_at_step  # noqa: E402


@pytest.mark.parametrize("lora", [False, True])
def test_a_stopped_training_resumes_from_its_last_checkpoint(lora, world, tmp_path, monkeypatch):
    """Killed after step 3 (checkpoints every 2 steps), re-run: it picks up at step 2 and ends
    where an uninterrupted run ends."""
    import torch

    from dataengine.models.tiny import build_tiny
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    data = read_jsonl(world.original, Sample)[:40]
    cfg = TrainConfig(epochs=1, batch_size=8, save_steps=2, sampling="sequential",  # 5 steps
                      lora=LoraConfig(r=4, alpha=8) if lora else None)
    whole = train(build_tiny(corpus(data), TINY), data, world.image_root, tmp_path / "whole", cfg)

    with killed_at_step(3):
        train(build_tiny(corpus(data), TINY), data, world.image_root, tmp_path / "cut", cfg)
    assert sorted(p.name for p in (tmp_path / "cut" / "trainer").iterdir()) == ["checkpoint-2", "run.json"]
    if not lora:  # a full checkpoint loads on its own: its processor was saved beside its weights
        assert VLM.load(tmp_path / "cut" / "trainer" / "checkpoint-2").prompt("Hi?") == VLM.load(tmp_path / "whole").prompt("Hi?")
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    resumed = train(build_tiny(corpus(data), TINY), data, world.image_root, tmp_path / "cut", cfg)
    # the log is the whole run's: steps 1-2 from the checkpoint, 3-5 trained now
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-4) and len(resumed["losses"]) == 5
    assert not (tmp_path / "cut" / "trainer").exists()  # checkpoints go once the model is saved
    a = VLM.load(tmp_path / "whole").model.state_dict()
    b = VLM.load(tmp_path / "cut").model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def _tiny(world):
    from dataengine.models.tiny import build_tiny
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    return build_tiny(corpus(read_jsonl(world.original, Sample)), TINY)


def test_the_same_seed_gives_the_same_weights_in_every_mode(world, tmp_path):
    import torch
    data = read_jsonl(world.original, Sample)[:24]
    for name, lora in (("full", None), ("lora", LoraConfig(r=4, alpha=8))):
        runs = [train(_tiny(world), data, world.image_root, tmp_path / f"{name}{i}", TrainConfig(epochs=1, batch_size=8, lora=lora, seed=s))
                for i, s in enumerate((3, 3, 4))]
        a, b, c = (VLM.load(tmp_path / f"{name}{i}").model.state_dict() for i in range(3))
        assert all(torch.equal(a[k], b[k]) for k in a), name  # same seed: identical, bit for bit
        assert any(not torch.equal(a[k], c[k]) for k in a), name  # another seed: another model
        assert runs[0]["losses"] == runs[1]["losses"]


def test_a_checkpoint_is_resumed_only_by_the_training_that_wrote_it(world, tmp_path):
    import pytest

    from dataengine.errors import DataError
    data = read_jsonl(world.original, Sample)[:40]
    cfg = TrainConfig(epochs=1, batch_size=8, save_steps=2, sampling="sequential")

    with killed_at_step(3):
        train(_tiny(world), data, world.image_root, tmp_path / "out", cfg)
    for other, what in ((dict(data=data[:32]), "other data"), (dict(cfg=cfg.model_copy(update={"lr": 1e-3})), "other settings")):
        kw = {"data": data, "cfg": cfg} | other
        with pytest.raises(DataError, match=f"out/trainer: holds the checkpoints of a training with {what}"):
            train(_tiny(world), kw["data"], world.image_root, tmp_path / "out", kw["cfg"])
    assert train(_tiny(world), data, world.image_root, tmp_path / "out", cfg)["steps"] == 5  # its own: resumed


def test_items_that_cannot_be_trained_on_are_named_before_any_step(world, tmp_path):
    import pytest

    from dataengine.errors import DataError
    good = read_jsonl(world.original, Sample)[:4]
    for bad, needle in ((good[0].model_copy(update={"short_answer": " "}), "empty short answer"),
                        (good[0].model_copy(update={"instruction": ""}), "empty question"),
                        (good[0].model_copy(update={"image": ""}), "no image"),
                        (good[0].model_copy(update={"instruction": "what " * 1500}), r"\d+ tokens with its image, more than the model.s 1024")):
        with pytest.raises(DataError, match=f"sample {bad.id}: {needle}"):
            train(_tiny(world), good[1:] + [bad], world.image_root, tmp_path / "m", TrainConfig(epochs=1, batch_size=8))
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_partial_answers_of_another_evaluation_are_refused(world, tmp_path):
    import pytest

    from dataengine.benchmarks.seed import read_seed
    from dataengine.errors import DataError
    from dataengine.evaluate import run_evaluate
    qs = read_seed(world.benchmark)
    a, b = _tiny(world), _tiny(world)
    for p in b.model.parameters():
        p.data.add_(0.01)

    class Stop(Exception):
        pass
    calls = []
    original = a.score_options

    def stop_after_one(items):
        calls.append(1)
        if len(calls) > 1:
            raise Stop
        return original(items)
    a.score_options = stop_after_one
    with pytest.raises(Stop):
        run_evaluate(a, qs, world.image_root, tmp_path / "ev", batch_size=8)
    assert (tmp_path / "ev" / "predictions.partial.jsonl").exists()
    with pytest.raises(DataError, match="partial answers of another run \\(model differ\\)"):
        run_evaluate(b, qs, world.image_root, tmp_path / "ev", batch_size=8)
    a.score_options = original
    assert run_evaluate(a, qs, world.image_root, tmp_path / "ev", batch_size=8).total == len(qs)  # its own: resumed
