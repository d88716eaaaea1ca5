"""The embedded default model, and tiny models of every family for tests: random-initialised, built
from a config (no download), with a byte-level BPE tokenizer trained on our own text.

`TinyConfig` is the model's shape (a nanoGPT-style record of sizes); `build_tiny` makes one. Each
family's builder registers itself in `TINY_BUILDERS`. Nothing heavy is imported until a model is built.
"""
from __future__ import annotations

from typing import Iterable

from pydantic import BaseModel, ConfigDict, field_validator

from ..registry import Registry
from .families import (
    IDEFICS3_TEMPLATE,
    LLAVA_QUESTION_FIRST_TEMPLATE,
    LLAVA_TEMPLATE,
    QWEN2_TEMPLATE,
)


class TinyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    """The shape of the embedded default model."""
    image_size: int = 96
    patch_size: int = 16
    hidden: int = 192
    vision_layers: int = 3
    text_layers: int = 3
    heads: int = 4
    vocab_size: int = 800
    family: str = "llava"  # or another of TINY_BUILDERS, to exercise that model family's inputs
    # llava: the question before the image in the prompt (see families.py). Off, as LLaVA-1.5's own
    # template and most checkpoints have it: with the image first the tiny model learned Instance
    # Location better (bench/learnability.py: 53% against 35%) and merged conversations cost it no
    # single-round accuracy (bench/dialog.py); README, "Learnability" and "Multi-round dialogs".
    question_first: bool = False
    seed: int = 0

    @field_validator("family")
    @classmethod
    def known_family(cls, v: str) -> str:
        return TINY_BUILDERS.check(v)


# family -> f(cfg, tokenizer_corpus) -> (model, processor); each builds its own tokenizer, since some
# processors add tokens to it.
TINY_BUILDERS: Registry = Registry("tiny model family")


def train_tokenizer(corpus: Iterable[str], vocab_size: int, special: dict[str, str] | None = None):
    """A byte-level BPE trained on our own text in under a second: no download. `special` names
    further special tokens a processor needs (attribute -> token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = {"image_token": "<image>", **(special or {})}
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>", *special.values()],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", extra_special_tokens=special)


def build_tiny(corpus: Iterable[str], cfg: TinyConfig | None = None):
    """A random-initialised `VLM` of `cfg.family` (LLaVA by default) from a config, with a tokenizer
    trained on `corpus`, on the CPU. Raises DataError for a family with no tiny builder."""
    import torch

    from .vlm import VLM

    cfg = cfg or TinyConfig()
    build = TINY_BUILDERS.get(cfg.family)
    config, cls, processor = build(cfg, list(corpus))
    torch.manual_seed(cfg.seed)
    return VLM(cls(config), processor, device="cpu")


# ---- the builders ----

def _vision_args(cfg: TinyConfig) -> dict:
    return dict(hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 4, num_hidden_layers=cfg.vision_layers,
                num_attention_heads=cfg.heads, image_size=cfg.image_size, patch_size=cfg.patch_size)


def _text_args(cfg: TinyConfig, tokenizer) -> dict:
    return dict(hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 4, num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads, vocab_size=len(tokenizer),
                max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def _pil(name: str):
    """transformers' PIL image processor of that name: no torchvision needed."""
    import transformers
    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


def _llava_common(cfg: TinyConfig, tokenizer) -> tuple[dict, dict]:
    from transformers import CLIPVisionConfig, LlamaConfig
    common = dict(vision_config=CLIPVisionConfig(**_vision_args(cfg)), text_config=LlamaConfig(**_text_args(cfg, tokenizer)),
                  image_token_index=tokenizer.image_token_id, vision_feature_select_strategy="default", vision_feature_layer=-1)
    template = LLAVA_QUESTION_FIRST_TEMPLATE if cfg.question_first and cfg.family == "llava" else LLAVA_TEMPLATE
    proc_args = dict(tokenizer=tokenizer, patch_size=cfg.patch_size, vision_feature_select_strategy="default",
                     num_additional_image_tokens=1, chat_template=template)
    return common, proc_args


@TINY_BUILDERS.register("llava")
def _llava(cfg: TinyConfig, corpus: list[str]):
    import transformers
    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    common, proc_args = _llava_common(cfg, tokenizer)
    crop = {"height": cfg.image_size, "width": cfg.image_size}
    processor = transformers.LlavaProcessor(
        image_processor=_pil("CLIPImageProcessor")(size={"shortest_edge": cfg.image_size}, crop_size=crop), **proc_args)
    return transformers.LlavaConfig(**common), transformers.LlavaForConditionalGeneration, processor


@TINY_BUILDERS.register("llava_next")
def _llava_next(cfg: TinyConfig, corpus: list[str]):
    import transformers
    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    common, proc_args = _llava_common(cfg, tokenizer)
    size, crop = cfg.image_size, {"height": cfg.image_size, "width": cfg.image_size}
    grid = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    ip = _pil("LlavaNextImageProcessor")(size={"shortest_edge": size}, crop_size=crop, image_grid_pinpoints=grid)
    processor = transformers.LlavaNextProcessor(image_processor=ip, **proc_args)
    return transformers.LlavaNextConfig(**common, image_grid_pinpoints=grid), transformers.LlavaNextForConditionalGeneration, processor


@TINY_BUILDERS.register("idefics3")
def _idefics3(cfg: TinyConfig, corpus: list[str]):
    import transformers
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, {"fake_image_token": "<fake_token_around_image>",
                                                         "global_image_token": "<global-img>",
                                                         "end_of_utterance_token": "<end_of_utterance>"})
    size, scale = cfg.image_size, 2  # Idefics3 merges 2x2 patches into one image token
    ip = _pil("Idefics3ImageProcessor")(do_image_splitting=False, size={"longest_edge": size}, max_image_size={"longest_edge": size})
    processor = transformers.Idefics3Processor(image_processor=ip, tokenizer=tokenizer, chat_template=IDEFICS3_TEMPLATE,
                                               image_seq_len=(size // cfg.patch_size) ** 2 // scale ** 2)
    config = transformers.Idefics3Config(vision_config=_vision_args(cfg), text_config=transformers.LlamaConfig(**_text_args(cfg, tokenizer)),
                                         scale_factor=scale, image_token_id=tokenizer.image_token_id)
    return config, transformers.Idefics3ForConditionalGeneration, processor


def _qwen(cfg: TinyConfig, corpus: list[str], version: str):
    import transformers

    from .families import FAMILIES
    from .vlm import image_only_processor
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, {"image_token": "<|image_pad|>", "vision_start_token": "<|vision_start|>",
                                                         "vision_end_token": "<|vision_end|>", "im_start_token": "<|im_start|>",
                                                         "im_end_token": "<|im_end|>"})
    size, patch, merge = cfg.image_size, cfg.patch_size // 2, 2  # 2x2 patches merge into one token, as many tokens as LLaVA's
    ip = _pil("Qwen2VLImageProcessor")(min_pixels=size * size, max_pixels=size * size, patch_size=patch,
                                       merge_size=merge, temporal_patch_size=2)
    processor = image_only_processor(FAMILIES.get(version))(image_processor=ip, tokenizer=tokenizer, chat_template=QWEN2_TEMPLATE)
    half, hw = cfg.hidden // cfg.heads // 2, cfg.hidden // cfg.heads // 2 * 3 // 8
    # the rotary frequencies shared out over (time, height, width) as Qwen2-VL's 16/24/24 of 64
    vision = dict(depth=cfg.vision_layers, hidden_size=cfg.hidden, num_heads=cfg.heads, patch_size=patch,
                  spatial_merge_size=merge, temporal_patch_size=2)
    if version == "qwen2_vl":
        vision |= {"embed_dim": cfg.hidden}
        config_cls, cls = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
    else:  # Qwen2.5-VL: windowed attention in the vision tower, full attention in its last block
        vision |= {"intermediate_size": cfg.hidden * 2, "out_hidden_size": cfg.hidden, "window_size": patch * merge * 2,
                   "fullatt_block_indexes": [cfg.vision_layers - 1]}
        config_cls, cls = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
    config = config_cls(
        text_config=dict(rope_scaling={"type": "mrope", "mrope_section": [half - 2 * hw, hw, hw]}, **_text_args(cfg, tokenizer)),
        vision_config=vision, image_token_id=tokenizer.image_token_id,
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"))
    return config, cls, processor


TINY_BUILDERS.register("qwen2_vl", lambda cfg, corpus: _qwen(cfg, corpus, "qwen2_vl"))
TINY_BUILDERS.register("qwen2_5_vl", lambda cfg, corpus: _qwen(cfg, corpus, "qwen2_5_vl"))


@TINY_BUILDERS.register("paligemma")
def _paligemma(cfg: TinyConfig, corpus: list[str]):
    import transformers
    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    # the processor first: PaliGemma's adds its location and segmentation tokens to the vocabulary
    ip = _pil("SiglipImageProcessor")(size={"height": cfg.image_size, "width": cfg.image_size})
    ip.image_seq_length = (cfg.image_size // cfg.patch_size) ** 2
    processor = transformers.PaliGemmaProcessor(image_processor=ip, tokenizer=tokenizer)
    text = dict(model_type="gemma", head_dim=cfg.hidden // cfg.heads, **_text_args(cfg, tokenizer))
    config = transformers.PaliGemmaConfig(vision_config=_vision_args(cfg), projection_dim=cfg.hidden,
                                          image_token_index=tokenizer.image_token_id, text_config=text)
    return config, transformers.PaliGemmaForConditionalGeneration, processor
