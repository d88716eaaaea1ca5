"""Model families as records: everything the engine needs to know about one `transformers` model type
to prompt it, score with it, train it and pretrain its vision tower. `VLM`, training and vision
pretraining read these records; adding a family is adding a record here (and, for tests, a tiny
builder in `tiny.py`).

Imports nothing heavy, so configs can check a family's name without loading torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..registry import Registry

# The LLaVA-1.5 conversation format.
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# The same with the question before the image: the image tokens then see the question (causal
# attention), so each patch can tell whether it shows what the question names (as InstructBLIP's
# instruction-aware Q-Former does). The tiny model's option `question_first`.
LLAVA_QUESTION_FIRST_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '\\n' }}<image>{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN2_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
IDEFICS3_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% else %} {{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")

# Per-token type inputs some processors give; never image inputs.
TYPE_ID_KEYS = ("token_type_ids", "mm_token_type_ids")


@dataclass(frozen=True)
class Family:
    """One model type (`model_type` in a checkpoint's config.json)."""
    name: str
    # The prompt format when a checkpoint ships no chat template; None: the question as it is
    # (PaliGemma has no chat format: its processor puts the image tokens and BOS first).
    chat_template: str | None
    # Regexes over parameter names: the vision encoder, the projector into the language model, the language model.
    vision: str
    projector: str
    language: str
    first_position: int = 0  # PaliGemma counts positions from 1
    # Option scoring may reuse the prefix's KV cache: 1-D positions, and options attend causally after
    # the prefix. Qwen2-VL's 3-D positions are computed from the whole sequence, so it takes full passes.
    shared_prefix: bool = True
    # The value an answer token gets in each per-token type input the processor gives: PaliGemma marks
    # its suffix (the answer) 1, which makes it causal; Qwen2-VL marks image tokens 1 and text 0.
    answer_type_ids: dict[str, int] = field(default_factory=dict)
    # The processor class whose video half needs torchvision (Qwen2-VL's): without torchvision, its
    # image half is loaded (`vlm.image_only_processor`).
    image_only_processor: str | None = None
    # The dense-label vision pretraining (`vision.py`) knows this tower (LLaVA's CLIP).
    vision_pretraining: bool = False
    vision_module: str = "vision_tower"  # the vision encoder's module name

    def is_vision(self, param: str) -> bool:
        return bool(re.search(self.vision, param)) and not self.is_projector(param)

    def is_projector(self, param: str) -> bool:
        return bool(re.search(self.projector, param))

    def lora_targets(self, modules: list[str]) -> str:
        """A regex naming the language model's `modules` only (the vision tower's attention has
        q_proj/k_proj/v_proj too, and LLaVA gives it no adapter)."""
        return rf".*{self.language}\..*\.({'|'.join(modules)})$"


FAMILIES: Registry[Family] = Registry("model family")

# LLaVA, PaliGemma: vision_tower; Idefics3: vision_model; Qwen2-VL: visual, with its projector (the
# merger) inside; the language model is language_model (Idefics3: text_model).
_VISION = r"(^|\.)(vision_tower|vision_model|visual)\."
_PROJECTOR = r"(^|\.)(multi_modal_projector|connector|merger)\."
_LANGUAGE = r"(language_model|text_model)"
_PARTS = dict(vision=_VISION, projector=_PROJECTOR, language=_LANGUAGE)

FAMILIES.register("llava", Family("llava", LLAVA_TEMPLATE, vision_pretraining=True, **_PARTS))
FAMILIES.register("llava_next", Family("llava_next", LLAVA_TEMPLATE, **_PARTS))
FAMILIES.register("idefics3", Family("idefics3", IDEFICS3_TEMPLATE, vision_module="vision_model", **_PARTS))
FAMILIES.register("qwen2_vl", Family("qwen2_vl", QWEN2_TEMPLATE, shared_prefix=False, answer_type_ids={"mm_token_type_ids": 0},
                                     image_only_processor="Qwen2VLProcessor", vision_module="visual", **_PARTS))
FAMILIES.register("qwen2_5_vl", Family("qwen2_5_vl", QWEN2_TEMPLATE, shared_prefix=False, answer_type_ids={"mm_token_type_ids": 0},
                                       image_only_processor="Qwen2_5_VLProcessor", vision_module="visual", **_PARTS))
FAMILIES.register("paligemma", Family("paligemma", None, first_position=1, answer_type_ids={"token_type_ids": 1}, **_PARTS))
