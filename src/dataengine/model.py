"""The model behind one small interface: score options, generate, and the pieces training needs.

`VLM.load(path)` opens a `transformers` image-text-to-text checkpoint (LLaVA-1.5, LLaVA-NeXT,
Idefics3 / SmolVLM, Qwen2-VL / Qwen2.5-VL, PaliGemma) with its own processor and prompt format.
`build_tiny` makes the embedded default: a random-initialised LLaVA (tiny CLIP tower, projector,
tiny Llama) and a tokenizer trained here; the other families build the same way for tests.
"""
from __future__ import annotations

import json

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from pydantic import BaseModel  # noqa: E402

transformers.utils.logging.disable_progress_bar()  # the loop shows its own progress
transformers.utils.logging.set_verbosity_error()

# The LLaVA-1.5 conversation format, for checkpoints that ship no chat template of their own.
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


class TinyConfig(BaseModel):
    """The shape of the embedded default model (a nanoGPT-style dataclass of sizes)."""
    image_size: int = 96
    patch_size: int = 16
    hidden: int = 192
    vision_layers: int = 3
    text_layers: int = 3
    heads: int = 4
    vocab_size: int = 800
    family: str = "llava"  # or another of TINY_FAMILIES, to exercise that model family's inputs
    seed: int = 0


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    types: dict[str, list[int]] | None = None  # per-token type ids some models need (token_type_ids, mm_token_type_ids)


@dataclass
class Prompts:
    """A batch of encoded prompts: token ids without padding, per-token type ids, and image inputs."""
    ids: list[list[int]]
    types: dict[str, list[list[int]]]
    images: dict[str, torch.Tensor]


# Model types this engine drives; `build_tiny` makes a tiny random model of each, for tests.
TINY_FAMILIES = ("llava", "llava_next", "idefics3", "qwen2_vl", "qwen2_5_vl", "paligemma")
SUPPORTED_MODELS = set(TINY_FAMILIES)
# Model types whose option scoring may reuse the prefix's KV cache: 1-D positions, and the options
# attend causally (PaliGemma's prefix is bidirectional, its suffix causal, as after a cached prefix).
# Qwen2-VL's 3-D positions are computed from the whole sequence, so it takes the full passes.
SHARED_PREFIX_MODELS = {"llava", "llava_next", "idefics3", "paligemma"}
# The value an answer token gets in each per-token type input: PaliGemma marks its suffix (the
# answer) 1, which makes it causal; Qwen2-VL marks image tokens 1 and text 0.
ANSWER_TYPE = {"token_type_ids": 1, "mm_token_type_ids": 0}
QWEN2_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
IDEFICS3_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% else %} {{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")


class VLM:
    """A vision-language model and its processor."""

    def __init__(self, model, processor, device: str | None = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # ---- loading and saving ----
    @classmethod
    def load(cls, path: str | Path, device: str | None = None, dtype: torch.dtype | None = None) -> "VLM":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        if not (path / "config.json").exists():
            from .errors import DataError
            raise DataError(f"{path}: no model here (config.json missing)")
        kind = json.loads((path / "config.json").read_text()).get("model_type")
        if kind not in SUPPORTED_MODELS:
            from .errors import DataError
            raise DataError(f"{path}: model type {kind!r} is not supported yet (supported: {', '.join(sorted(SUPPORTED_MODELS))})")
        try:
            processor = AutoProcessor.from_pretrained(path)
        except (AttributeError, ImportError, OSError, ValueError):
            if kind not in ("qwen2_vl", "qwen2_5_vl"):
                raise
            processor = image_only_processor(kind).from_pretrained(path)  # no torchvision here
        if getattr(processor, "chat_template", None) is None and kind != "paligemma":
            processor.chat_template = LLAVA_TEMPLATE
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype or torch.float32)
        return cls(model, processor, device)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.processor.save_pretrained(path)

    # ---- prompts and encodings ----
    @property
    def kind(self) -> str:
        return self.model.config.model_type

    def prompt(self, question: str) -> str:
        if self.kind == "paligemma":
            return question  # PaliGemma has no chat format: its processor puts the image tokens and BOS first
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def encode_prompts(self, questions: list[str], images: list[Image.Image]) -> Prompts:
        """Prompt token ids (image placeholder expanded as the model expects), their per-token type ids,
        and the model's image inputs (pixel_values, image_sizes, image_grid_thw, ...), in one call."""
        enc = self.processor(images=images, text=[self.prompt(q) for q in questions], return_tensors="pt", padding=True)
        keep = enc["attention_mask"].bool()
        rows = lambda t: [row[m].tolist() for row, m in zip(t, keep)]  # noqa: E731
        types = {k: rows(enc[k]) for k in ANSWER_TYPE if k in enc}
        images_in = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "labels", *ANSWER_TYPE)}
        return Prompts(rows(enc["input_ids"]), types, images_in)

    @staticmethod
    def select_images(inputs: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The image inputs of items `index` (repeats allowed). Most processors give one row per item;
        Qwen2-VL flattens every image's patches into one tensor, counted by image_grid_thw."""
        if "image_grid_thw" in inputs:
            grid = inputs["image_grid_thw"]
            patches = inputs["pixel_values"].split(grid.prod(-1).tolist())
            return {"pixel_values": torch.cat([patches[i] for i in index.tolist()]), "image_grid_thw": grid[index]}
        return {k: v[index] for k, v in inputs.items()}

    def _on_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device) for k, v in inputs.items()}

    def _with_answer(self, prompts: Prompts, i: int, answer: list[int]) -> Encoded:
        prompt = prompts.ids[i]
        types = {k: v[i] + [ANSWER_TYPE[k]] * len(answer) for k, v in prompts.types.items()}
        return Encoded(prompt + answer, [-100] * len(prompt) + answer, types)

    def encode_answer(self, answer: str) -> list[int]:
        # Encoded apart from the prompt (as lm-eval does) so every option shares the same prefix.
        ids = self.tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
        return ids + [self.tokenizer.eos_token_id]

    def encode_batch(self, questions: list[str], images: list[Image.Image], answers: list[str]) -> dict[str, torch.Tensor]:
        """A training batch: loss on the answer tokens only."""
        prompts = self.encode_prompts(questions, images)
        encoded = [self._with_answer(prompts, i, self.encode_answer(a)) for i, a in enumerate(answers)]
        return self.collate(encoded, prompts.images)

    def collate(self, encoded: list[Encoded], image_inputs: dict[str, torch.Tensor], left: bool = False) -> dict[str, torch.Tensor]:
        """Pad to one width: on the right for training and scoring, on the left (`left`) for generation."""
        width = max(len(e.input_ids) for e in encoded)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        labels = torch.full((len(encoded), width), -100, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        types = {k: torch.zeros((len(encoded), width), dtype=torch.long) for k in (encoded[0].types or {})}
        for i, e in enumerate(encoded):
            n = len(e.input_ids)
            cols = slice(width - n, width) if left else slice(0, n)
            ids[i, cols] = torch.tensor(e.input_ids)
            labels[i, cols] = torch.tensor(e.labels)
            mask[i, cols] = 1
            for k, v in (e.types or {}).items():
                types[k][i, cols] = torch.tensor(v)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, **types, **image_inputs}

    # ---- the two requests the evaluator makes ----
    @torch.no_grad()
    def score_options(self, items: Iterable[tuple[Image.Image, str, list[str]]], reduce: str = "mean",
                      shared_prefix: bool | None = None) -> list[list[float]]:
        """Loss of each option given image and question (lower is better), one list per item.

        The options of a question share its image and question: by default (for model types known to
        work that way) that prefix runs once and each option continues from its KV cache, instead of
        one full pass per option. `shared_prefix=False` forces the full passes.
        """
        self.model.eval()
        items = list(items)
        if not items:
            return []
        if shared_prefix is None:
            shared_prefix = self.model.config.model_type in SHARED_PREFIX_MODELS
        if shared_prefix:
            return self._score_shared(items, reduce)
        prompts = self.encode_prompts([q for _, q, _ in items], [img for img, _, _ in items])
        encoded = [self._with_answer(prompts, i, self.encode_answer(o)) for i, (_, _, opts) in enumerate(items) for o in opts]
        sizes = [len(opts) for _, _, opts in items]
        owner = torch.repeat_interleave(torch.arange(len(items)), torch.tensor(sizes))
        batch = self.collate(encoded, self.select_images(prompts.images, owner))
        batch = self._on_device(batch)
        labels = batch.pop("labels")
        logits = self.model(**batch).logits.float()
        # Position t predicts token t+1.
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = labels[:, 1:]
        keep = target != -100
        tok = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
        nll = -tok.sum(-1)
        if reduce == "mean":
            nll = nll / keep.sum(-1)
        flat = nll.tolist()
        out, i = [], 0
        for n in sizes:
            out.append(flat[i:i + n])
            i += n
        return out

    def _score_shared(self, items, reduce: str) -> list[list[float]]:
        prompts = self.encode_prompts([q for _, q, _ in items], [img for img, _, _ in items])
        pad = self.tokenizer.pad_token_id
        # 1. every prefix once, left-padded so each ends at the last column, with explicit positions
        batch = self.collate([Encoded(p, p, {k: v[i] for k, v in prompts.types.items()}) for i, p in enumerate(prompts.ids)],
                             prompts.images, left=True)
        ids, mask = batch.pop("input_ids"), batch.pop("attention_mask")
        batch.pop("labels")
        first_pos = 1 if self.kind == "paligemma" else 0  # PaliGemma counts positions from 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0) + first_pos
        dev = self.device
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         **self._on_device(batch), use_cache=True)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # predicts each option's first token
        # 2. the options, all at once, each row continuing its question's cache
        answers = [self.encode_answer(o) for _, _, opts in items for o in opts]
        owner = torch.tensor([i for i, (_, _, opts) in enumerate(items) for _ in opts])
        longest = max(len(a) for a in answers)
        opt = torch.full((len(answers), longest), pad, dtype=torch.long)
        opt_mask = torch.zeros_like(opt)
        for r, a in enumerate(answers):
            opt[r, :len(a)] = torch.tensor(a)
            opt_mask[r, :len(a)] = 1
        cache = out.past_key_values
        cache.batch_select_indices(owner.to(dev))
        opt_pos = mask.sum(-1)[owner].unsqueeze(1) + torch.arange(longest) + first_pos
        logits = self.model(input_ids=opt.to(dev), attention_mask=torch.cat([mask[owner], opt_mask], 1).to(dev),
                            position_ids=opt_pos.to(dev), past_key_values=cache, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        opt, opt_mask = opt.to(dev), opt_mask.to(dev)
        tok0 = first[owner.to(dev)].gather(1, opt[:, :1]).squeeze(1)
        rest = (logp.gather(-1, opt[:, 1:].unsqueeze(-1)).squeeze(-1) * opt_mask[:, 1:]).sum(-1)
        nll = -(tok0 + rest)
        if reduce == "mean":
            nll = nll / opt_mask.sum(-1)
        flat, out_lists, i = nll.tolist(), [], 0
        for _, _, opts in items:
            out_lists.append(flat[i:i + len(opts)])
            i += len(opts)
        return out_lists

    @torch.no_grad()
    def generate(self, items: Iterable[tuple[Image.Image, str]], max_new_tokens: int = 8) -> list[str]:
        self.model.eval()
        items = list(items)
        prompts = self.encode_prompts([q for _, q in items], [img for img, _ in items])
        # Left padding, so that every row's next token comes right after its prompt.
        batch = self.collate([Encoded(p, p, {k: v[i] for k, v in prompts.types.items()}) for i, p in enumerate(prompts.ids)],
                             prompts.images, left=True)
        batch.pop("labels")
        width, pad = batch["input_ids"].shape[1], self.tokenizer.pad_token_id
        out = self.model.generate(**self._on_device(batch), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def image_only_processor(kind: str):
    """Qwen2-VL's processor class without its video half, whose processor needs torchvision (absent
    from CPU-only installs; a CUDA torchvision does not load on a CPU torch). It saves under the
    original class's name, so a checkpoint written here loads anywhere with `AutoProcessor`."""
    from transformers.processing_utils import ProcessorMixin
    base = transformers.Qwen2_5_VLProcessor if kind == "qwen2_5_vl" else transformers.Qwen2VLProcessor

    class ImageOnly(base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token, self.video_token_id = "<|video_pad|>", None
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnly.__name__ = ImageOnly.__qualname__ = base.__name__
    return ImageOnly


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


def build_tiny(corpus: Iterable[str], cfg: TinyConfig | None = None) -> VLM:
    """A random-initialised model of `cfg.family` (LLaVA by default) from a config, with a tokenizer trained on `corpus`."""
    import transformers
    from transformers import CLIPVisionConfig, LlamaConfig

    cfg = cfg or TinyConfig()
    if cfg.family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny model family {cfg.family!r}; known: {', '.join(TINY_FAMILIES)}")
    special = {
        "idefics3": {"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
                     "end_of_utterance_token": "<end_of_utterance>"},
        "qwen2_vl": (qwen := {"image_token": "<|image_pad|>", "vision_start_token": "<|vision_start|>",
                     "vision_end_token": "<|vision_end|>"}),
        "qwen2_5_vl": qwen,
    }.get(cfg.family, {})
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, special)
    size = cfg.image_size
    vision_args = dict(hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 4, num_hidden_layers=cfg.vision_layers,
                       num_attention_heads=cfg.heads, image_size=size, patch_size=cfg.patch_size)
    crop = {"height": size, "width": size}
    # the PIL image processors: no torchvision needed
    pil = lambda name: getattr(transformers, name + "Pil", None) or getattr(transformers, name)  # noqa: E731
    processor = None
    if cfg.family == "paligemma":
        # made first: PaliGemma's processor adds its location and segmentation tokens to the vocabulary
        ip = pil("SiglipImageProcessor")(size=crop)
        ip.image_seq_length = (size // cfg.patch_size) ** 2
        processor = transformers.PaliGemmaProcessor(image_processor=ip, tokenizer=tokenizer)
    elif cfg.family in ("qwen2_vl", "qwen2_5_vl"):
        patch, merge = cfg.patch_size // 2, 2  # 2x2 patches merge into one token, as many tokens as LLaVA's
        ip = pil("Qwen2VLImageProcessor")(min_pixels=size * size, max_pixels=size * size, patch_size=patch,
                                          merge_size=merge, temporal_patch_size=2)
        processor = image_only_processor(cfg.family)(image_processor=ip, tokenizer=tokenizer, chat_template=QWEN2_TEMPLATE)
    text_args = dict(hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 4, num_hidden_layers=cfg.text_layers,
                     num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads, vocab_size=len(tokenizer),
                     max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    text = LlamaConfig(**text_args)
    if cfg.family == "paligemma":
        config = transformers.PaliGemmaConfig(vision_config=vision_args, projection_dim=cfg.hidden, image_token_index=tokenizer.image_token_id,
                                              text_config=dict(model_type="gemma", head_dim=cfg.hidden // cfg.heads, **text_args))
        cls = transformers.PaliGemmaForConditionalGeneration
    elif cfg.family in ("qwen2_vl", "qwen2_5_vl"):
        half, hw = cfg.hidden // cfg.heads // 2, cfg.hidden // cfg.heads // 2 * 3 // 8
        # the rotary frequencies shared out over (time, height, width) as Qwen2-VL's 16/24/24 of 64
        vision = dict(depth=cfg.vision_layers, hidden_size=cfg.hidden, num_heads=cfg.heads, patch_size=patch,
                      spatial_merge_size=merge, temporal_patch_size=2)
        if cfg.family == "qwen2_vl":
            vision |= {"embed_dim": cfg.hidden}
            config_cls, cls = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
        else:  # Qwen2.5-VL: windowed attention in the vision tower, full attention in its last block
            vision |= {"intermediate_size": cfg.hidden * 2, "out_hidden_size": cfg.hidden, "window_size": patch * merge * 2,
                       "fullatt_block_indexes": [cfg.vision_layers - 1]}
            config_cls, cls = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
        config = config_cls(
            text_config=dict(rope_scaling={"type": "mrope", "mrope_section": [half - 2 * hw, hw, hw]}, **text_args),
            vision_config=vision, image_token_id=tokenizer.image_token_id,
            vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"))
    elif cfg.family == "idefics3":
        scale = 2  # Idefics3 merges 2x2 patches into one image token
        ip = pil("Idefics3ImageProcessor")(do_image_splitting=False, size={"longest_edge": size}, max_image_size={"longest_edge": size})
        processor = transformers.Idefics3Processor(image_processor=ip, tokenizer=tokenizer, chat_template=IDEFICS3_TEMPLATE,
                                                   image_seq_len=(size // cfg.patch_size) ** 2 // scale ** 2)
        config = transformers.Idefics3Config(vision_config=vision_args, text_config=text, scale_factor=scale,
                                             image_token_id=tokenizer.image_token_id)
        cls = transformers.Idefics3ForConditionalGeneration
    else:
        common = dict(vision_config=CLIPVisionConfig(**vision_args), text_config=text, image_token_index=tokenizer.image_token_id,
                      vision_feature_select_strategy="default", vision_feature_layer=-1)
        proc_args = dict(tokenizer=tokenizer, patch_size=cfg.patch_size, vision_feature_select_strategy="default",
                         num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
        if cfg.family == "llava":
            processor = transformers.LlavaProcessor(image_processor=pil("CLIPImageProcessor")(size={"shortest_edge": size}, crop_size=crop),
                                                    **proc_args)
            config, cls = transformers.LlavaConfig(**common), transformers.LlavaForConditionalGeneration
        else:
            grid = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
            ip = pil("LlavaNextImageProcessor")(size={"shortest_edge": size}, crop_size=crop, image_grid_pinpoints=grid)
            processor = transformers.LlavaNextProcessor(image_processor=ip, **proc_args)
            config = transformers.LlavaNextConfig(**common, image_grid_pinpoints=grid)
            cls = transformers.LlavaNextForConditionalGeneration
    torch.manual_seed(cfg.seed)
    return VLM(cls(config), processor, device="cpu")
