"""Model families are records: each tiny model's parts are found by its record's patterns, and the
prompt format comes from the checkpoint (processor, else tokenizer) before the record's fallback."""
import re

import pytest

from dataengine.models.families import FAMILIES, LLAVA_TEMPLATE
from dataengine.models.tiny import TINY_BUILDERS, build_tiny
from dataengine.models.vlm import VLM
from tests.support.configs import TINY

CORPUS = ["USER: <image>\nWhat color is the ball? ASSISTANT: red ball blue box"] * 3


def test_every_tiny_family_has_a_record():
    assert set(TINY_BUILDERS) == set(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_records_patterns_find_each_part(family):
    vlm = build_tiny(CORPUS, TINY.model_copy(update={"family": family}))
    f = vlm.family
    assert f.name == vlm.kind == family
    names = [n for n, _ in vlm.model.named_parameters()]
    vision = [n for n in names if f.is_vision(n)]
    projector = [n for n in names if f.is_projector(n)]
    rest = [n for n in names if n not in vision and n not in projector]
    assert vision and projector and rest
    assert all(re.search(f.language, n) for n in rest if not re.search("embed_tokens|lm_head|norm|image_newline", n))
    # LoRA adapters go into the language model's attention only, never the vision tower's
    target = re.compile(f.lora_targets(["q_proj", "v_proj"]))
    modules = [n for n, _ in vlm.model.named_modules() if target.fullmatch(n)]
    assert modules and all(re.search(f.language, n) and not f.is_vision(n + ".") for n in modules)
    assert any(n.rsplit(".", 1)[-1] == f.vision_module for n, _ in vlm.model.named_modules())


def test_the_checkpoints_own_template_comes_first(tmp_path):
    """Published checkpoints keep the template in the processor (chat_template.jinja), in the
    tokenizer's config, or nowhere: each is used in that order, the family's record last."""
    import json
    custom = "{% for m in messages %}Q: {% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}" \
             "{% endfor %}{% endfor %}{% if add_generation_prompt %} A:{% endif %}"
    build_tiny(CORPUS, TINY.model_copy(update={"question_first": False})).save(tmp_path / "m")
    assert VLM.load(tmp_path / "m").prompt("What?") == "USER: <image>\nWhat? ASSISTANT:"  # its own, saved with it
    (tmp_path / "m" / "chat_template.jinja").unlink()
    config = tmp_path / "m" / "tokenizer_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"chat_template": custom}))
    assert VLM.load(tmp_path / "m").prompt("What?") == "Q: What? A:"  # the tokenizer's
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "chat_template"}))
    loaded = VLM.load(tmp_path / "m")
    assert loaded.processor.chat_template == LLAVA_TEMPLATE  # the family's


def test_question_first_puts_the_image_after_the_question():
    vlm = build_tiny(CORPUS, TINY.model_copy(update={"question_first": True}))
    assert vlm.prompt("What is it?") == "USER: What is it?\n<image> ASSISTANT:"
    assert build_tiny(CORPUS, TINY.model_copy(update={"question_first": False})).prompt("What is it?") == \
        "USER: <image>\nWhat is it? ASSISTANT:"
