"""The model behind one small interface: score options, generate, and the pieces training needs.

`VLM.load(path)` opens any LLaVA-style `transformers` checkpoint with its own processor (the tiny
model this project builds, or llava-hf/llava-1.5-7b-hf). `build_tiny` makes the embedded default: a
random-initialised LLaVA (tiny CLIP tower, projector, tiny Llama) and a tokenizer trained here.
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
    family: str = "llava"  # or "llava_next" (any-resolution tiles), to exercise a second model family
    seed: int = 0


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


# Model families this engine drives: each processor's image inputs come one row per item, and
# the language model is causal with 1-D positions. Qwen2-VL (flattened patches, 3-D positions) and
# PaliGemma (prefix attention) still need their own handling.
SUPPORTED_MODELS = {"llava", "llava_next", "idefics3"}
# Model types whose option scoring may reuse the prefix's KV cache (plain causal attention, 1-D positions).
SHARED_PREFIX_MODELS = {"llava", "llava_next", "idefics3"}
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
        processor = AutoProcessor.from_pretrained(path)
        if getattr(processor, "chat_template", None) is None:
            processor.chat_template = LLAVA_TEMPLATE
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype or torch.float32)
        return cls(model, processor, device)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.processor.save_pretrained(path)

    # ---- prompts and encodings ----
    def prompt(self, question: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def encode_prompts(self, questions: list[str], images: list[Image.Image]) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        """Prompt token ids (image placeholder expanded as the model expects) and the model's image
        inputs (pixel_values, and e.g. image_sizes for LLaVA-NeXT, one row per item), in one call."""
        enc = self.processor(images=images, text=[self.prompt(q) for q in questions], return_tensors="pt", padding=True)
        ids = [row[mask.bool()].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"])]
        return ids, {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}

    def _on_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device) for k, v in inputs.items()}

    def encode_answer(self, answer: str) -> list[int]:
        # Encoded apart from the prompt (as lm-eval does) so every option shares the same prefix.
        ids = self.tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
        return ids + [self.tokenizer.eos_token_id]

    def encode_batch(self, questions: list[str], images: list[Image.Image], answers: list[str]) -> dict[str, torch.Tensor]:
        """A training batch: loss on the answer tokens only."""
        prompts, image_inputs = self.encode_prompts(questions, images)
        encoded = []
        for prompt, answer in zip(prompts, answers):
            ans = self.encode_answer(answer)
            encoded.append(Encoded(prompt + ans, [-100] * len(prompt) + ans))
        return self.collate(encoded, image_inputs)

    def collate(self, encoded: list[Encoded], image_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for e in encoded)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        labels = torch.full((len(encoded), width), -100, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            n = len(e.input_ids)
            ids[i, :n] = torch.tensor(e.input_ids)
            labels[i, :n] = torch.tensor(e.labels)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, **image_inputs}

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
        prompts, image_inputs = self.encode_prompts([q for _, q, _ in items], [img for img, _, _ in items])
        encoded, sizes = [], []
        for prompt, (_, _, options) in zip(prompts, items):
            for opt in options:
                ans = self.encode_answer(opt)
                encoded.append(Encoded(prompt + ans, [-100] * len(prompt) + ans))
            sizes.append(len(options))
        repeats = torch.tensor(sizes)
        batch = self.collate(encoded, {k: v.repeat_interleave(repeats, dim=0) for k, v in image_inputs.items()})
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
        prompts, image_inputs = self.encode_prompts([q for _, q, _ in items], [img for img, _, _ in items])
        pad = self.tokenizer.pad_token_id
        # 1. every prefix once, left-padded so each ends at the last column, with explicit positions
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = self.device
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         **self._on_device(image_inputs), use_cache=True)
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
        opt_pos = mask.sum(-1)[owner].unsqueeze(1) + torch.arange(longest)
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
        prompts, image_inputs = self.encode_prompts([q for _, q in items], [img for img, _ in items])
        encoded = [Encoded(ids, ids) for ids in prompts]
        # Left padding, so that every row's next token comes right after its prompt.
        width = max(len(e.input_ids) for e in encoded)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, width - len(e.input_ids):] = torch.tensor(e.input_ids)
            mask[i, width - len(e.input_ids):] = 1
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  **self._on_device(image_inputs),
                                  max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


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
    """A random-initialised LLaVA (or LLaVA-NeXT, Idefics3) from a config, with a tokenizer trained on `corpus`."""
    import transformers
    from transformers import CLIPVisionConfig, LlamaConfig

    cfg = cfg or TinyConfig()
    if cfg.family not in SUPPORTED_MODELS:
        raise ValueError(f"unknown tiny model family {cfg.family!r}; known: {', '.join(sorted(SUPPORTED_MODELS))}")
    special = {"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
               "end_of_utterance_token": "<end_of_utterance>"} if cfg.family == "idefics3" else {}
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, special)
    size = cfg.image_size
    text = LlamaConfig(hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 4, num_hidden_layers=cfg.text_layers,
                       num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads, vocab_size=len(tokenizer),
                       max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision_args = dict(hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 4, num_hidden_layers=cfg.vision_layers,
                       num_attention_heads=cfg.heads, image_size=size, patch_size=cfg.patch_size)
    crop = {"height": size, "width": size}
    # the PIL image processors: no torchvision needed
    pil = lambda name: getattr(transformers, name + "Pil", None) or getattr(transformers, name)  # noqa: E731
    if cfg.family == "idefics3":
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
