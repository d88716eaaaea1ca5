from pathlib import Path

import pytest
import yaml

from dataengine.config import dump_config, load_config
from dataengine.errors import DataError


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config(None)
    assert cfg.rounds == 3 and cfg.sample.strategy == "error" and cfg.train.freeze_vision
    p = tmp_path / "run.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def test_partial_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("sample: {strategy: uniform, budget: 50}\ntrain: {lora: {r: 8, alpha: 16}}\n")
    cfg = load_config(p)
    assert cfg.sample.budget == 50 and cfg.train.lora.r == 8 and cfg.rounds == 3
    # a section keeps the defaults of what it does not set (the round's 2 epochs and frozen tower too)
    assert cfg.train.epochs == 2.0 and cfg.train.freeze_vision


def _merged(default, given):
    if not isinstance(given, dict) or not isinstance(default, dict):
        return given
    return {k: _merged(v, given[k]) if k in given else v for k, v in default.items()}


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_change_only_what_they_set(path):
    cfg = load_config(path).model_dump(mode="json")
    assert cfg == _merged(load_config(None).model_dump(mode="json"), yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("text,msg", [
    ("sample: {budget: lots}\n", "sample.budget"),
    ("data: {benchmark: b.json}\n", "image_root is needed when benchmark is given"),
    ("rounds: [\n", "not valid YAML"),
    ("roundz: 5\n", "roundz: unknown key (did you mean 'rounds'?)"),
    ("sample: {budjet: 5}\n", "sample.budjet: unknown key (did you mean 'budget'?)"),
    ("train: {lora: {rank: 8}}\n", "train.lora.rank: unknown key"),
    ("llm: {base_url: [x]}\n", "llm.base_url: unknown key (did you mean 'base_urls'?)"),
    ("model: {tiny: {family: lava}}\n", "model.tiny.family: unknown tiny model family 'lava' (did you mean 'llava'?)"),
    ("model: {align: grounded}\n", "model.align: unknown alignment data 'grounded' (did you mean 'grounding'?)"),
    ("generate: {generator: LLM}\n", "generate.generator: unknown generator 'LLM'"),
    ("embed: {model: minlm}\n", "did you mean 'minilm'?"),
    ("evaluate: {batch_size: 0}\n", "evaluate.batch_size: Input should be greater than or equal to 1"),
    ("train: {preset: llava-1.5}\n", "unknown preset 'llava-1.5' (did you mean"),
])
def test_bad_config_names_the_file(tmp_path, text, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        load_config(p)
    assert str(p) in str(e.value) and msg in str(e.value)


def test_a_run_made_before_a_new_field_existed_still_resumes(tmp_path):
    import yaml

    from dataengine.config import dump_config
    from dataengine.loop import Loop
    from tests.support.configs import small_config
    cfg = small_config()
    old = yaml.safe_load(dump_config(cfg))
    del old["ipo"], old["model"]["tiny"]["family"]  # as written by a version without these fields
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    Loop(cfg, run).check_config()  # no refusal
    (run / "config.yaml").write_text(yaml.safe_dump(old | {"seed": 9}))
    import pytest

    from dataengine.errors import DataError
    with pytest.raises(DataError, match="made with another config"):
        Loop(cfg, run).check_config()


@pytest.mark.parametrize("text,weight", [
    ("", 1.0),  # the embedded tiny model on single items: grounded
    ("model: {path: llava-hf/llava-1.5-7b-hf}", 0.0),  # a checkpoint: its language model binds phrases already
    ("train: {conversation: merged}", 0.0),  # grounding needs single items
    ("model: {tiny: {family: qwen2_vl}}", 0.0),  # and one image token per patch (LLaVA's layout)
    ("train: {ground_attention: 0}", 0.0),
    ("model: {path: some/llava}\ntrain: {ground_attention: 0.5}", 0.5),  # asked for, it is given
])
def test_a_training_grounds_attention_for_the_tiny_model_unless_told(tmp_path, text, weight):
    (tmp_path / "c.yaml").write_text(text)
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.training().ground_attention == weight
    assert cfg.training(epochs=3.0).epochs == 3.0 and cfg.training(ground_attention=0.0).ground_attention == 0.0


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    # a config the README tells users to run must still validate after a change of the schema
    cfg = load_config(path)
    assert cfg.model_dump() != load_config(None).model_dump()


def test_conditional_pairs_need_pairs_to_condition():
    from dataengine.config import HADPOConfig
    assert HADPOConfig(pairs=["existence", "conditional"]).pairs == ["existence", "conditional"]
    with pytest.raises(ValueError, match="conditional pairs are made from description or existence pairs"):
        HADPOConfig(pairs=["conditional"])
