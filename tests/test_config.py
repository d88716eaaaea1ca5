import pytest

from dataengine.config import dump_config, load_config
from dataengine.errors import DataError


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config(None)
    assert cfg.rounds == 3 and cfg.sample.strategy == "sqrt-error" and cfg.train.freeze_vision
    p = tmp_path / "run.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def test_partial_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("sample: {strategy: uniform, budget: 50}\ntrain: {lora: {r: 8, alpha: 16}}\n")
    cfg = load_config(p)
    assert cfg.sample.budget == 50 and cfg.train.lora.r == 8 and cfg.rounds == 3


@pytest.mark.parametrize("text,msg", [
    ("sample: {budget: lots}\n", "sample.budget"),
    ("data: {benchmark: b.json}\n", "image_root is needed when benchmark is given"),
    ("rounds: [\n", "not valid YAML"),
])
def test_bad_config_names_the_file(tmp_path, text, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        load_config(p)
    assert str(p) in str(e.value) and msg in str(e.value)
