"""Model families are records: each tiny model's parts are found by its record's patterns, and the
prompt format comes from the checkpoint (processor, else tokenizer) before the record's fallback."""
import re

import pytest

from dataengine.models.families import FAMILIES
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


@pytest.mark.parametrize("family", [f for f in FAMILIES if FAMILIES.get(f).chat_template])
def test_the_checkpoints_own_template_comes_first(tmp_path, family):
    """Published checkpoints keep the template in the processor (chat_template.jinja), in the
    tokenizer's config, or nowhere: each is used in that order, the family's record last, and saving
    writes back the one in use."""
    import json
    custom = "{% for m in messages %}Q: {% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}" \
             "{% endfor %}{% endfor %}{% if add_generation_prompt %} A:{% endif %}"
    tiny = build_tiny(CORPUS, TINY.model_copy(update={"family": family, "question_first": False}))
    tiny.save(tmp_path / "m")
    own = tiny.prompt("What?")
    assert VLM.load(tmp_path / "m").prompt("What?") == own  # its own, saved with it
    (tmp_path / "m" / "chat_template.jinja").unlink()
    config = tmp_path / "m" / "tokenizer_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"chat_template": custom}))
    from_tokenizer = VLM.load(tmp_path / "m")
    assert from_tokenizer.prompt("What?") == "Q: What? A:"  # the tokenizer's
    from_tokenizer.save(tmp_path / "again")
    assert VLM.load(tmp_path / "again").prompt("What?") == "Q: What? A:"  # saving keeps it, not the family's
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "chat_template"}))
    assert VLM.load(tmp_path / "m").processor.chat_template == FAMILIES.get(family).chat_template  # the family's


def test_question_first_puts_the_image_after_the_question():
    vlm = build_tiny(CORPUS, TINY.model_copy(update={"question_first": True}))
    assert vlm.prompt("What is it?") == "USER: What is it?\n<image> ASSISTANT:"
    assert vlm.question_first and not build_tiny(CORPUS, TINY.model_copy(update={"question_first": False})).question_first
    assert not build_tiny(CORPUS, TINY.model_copy(update={"family": "qwen2_vl"})).question_first
    assert build_tiny(CORPUS, TINY.model_copy(update={"question_first": False})).prompt("What is it?") == \
        "USER: <image>\nWhat is it? ASSISTANT:"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_target_is_what_the_familys_own_format_says(family):
    """Training encodes an answer as the model's chat template writes the assistant's turn (or, for
    PaliGemma, as its processor builds a suffix): prompt and answer tokens are the templated
    conversation's tokens, and only the answer's carry a loss."""
    from PIL import Image
    vlm = build_tiny(CORPUS, TINY.model_copy(update={"family": family}))
    img = Image.new("RGB", (64, 64))
    batch = vlm.encode_batch(["What color is the ball?"], [img], ["red ball"])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    answer = [i for i, lab in zip(ids, labels) if lab != -100]
    if vlm.family.chat_template is None:  # PaliGemma: the processor's own suffix encoding
        ref = vlm.processor(images=[img], text=["What color is the ball?"], suffix=["red ball"], return_tensors="pt")
        assert ids == ref["input_ids"][0].tolist()
        assert labels == ref["labels"][0].tolist()
        return
    user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the ball?"}]}]
    full = vlm.processor.apply_chat_template(user + [{"role": "assistant", "content": [{"type": "text", "text": "red ball"}]}])
    ref = vlm.processor(images=[img], text=[full], return_tensors="pt")["input_ids"][0].tolist()
    assert ids == ref
    said = vlm.tokenizer.decode(answer)
    assert said.strip().startswith("red ball") and said != "red ball"  # with the format's end of turn
    for special in ("<|im_end|>", "<end_of_utterance>", "</s>"):
        if special in full:
            assert vlm.tokenizer.convert_tokens_to_ids(special) in answer  # one token, and trained on
