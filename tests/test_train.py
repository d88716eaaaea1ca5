from dataengine.model import VLM
from dataengine.records import Sample, read_jsonl
from dataengine.train import LoraConfig, TrainConfig, train


def test_short_training_lowers_the_loss(tiny_vlm, world, tmp_path):
    data = read_jsonl(world.original, Sample)
    log = train(tiny_vlm, data, world.image_root, tmp_path / "m", TrainConfig(epochs=3, batch_size=8, lr=1e-3))
    first, last = log["losses"][0], log["losses"][-1]
    assert last < 0.7 * first, log["losses"]
    assert (tmp_path / "m" / "model.safetensors").exists() and (tmp_path / "m" / "train_log.json").exists()
    VLM.load(tmp_path / "m")  # loads back as a plain checkpoint


def test_lora_trains_and_merges(world, tmp_path):
    from dataengine.loop import corpus
    from dataengine.model import build_tiny
    from tests.conftest import TINY
    data = read_jsonl(world.original, Sample)
    vlm = build_tiny(corpus(data), TINY)
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    log = train(vlm, data[:32], world.image_root, tmp_path / "lora",
                TrainConfig(epochs=1, batch_size=8, lora=LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])))
    after = VLM.load(tmp_path / "lora").model.state_dict()
    assert set(after) == set(before)  # merged: plain weights, no adapter keys
    changed = [k for k in before if not (before[k] == after[k]).all()]
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)
    assert log["steps"] == 4
