"""A `transformers` vision-language model in this process, behind the small interface of `base.py`
(score options, generate) plus the pieces training needs (encode a batch, save).

`VLM.load(path)` opens an image-text-to-text checkpoint of a known family (`families.py`: LLaVA-1.5,
LLaVA-NeXT, Idefics3 / SmolVLM, Qwen2-VL / Qwen2.5-VL, PaliGemma) with its own processor and
prompt format.
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

from ..errors import DataError  # noqa: E402
from .families import FAMILIES, TYPE_ID_KEYS, Family  # noqa: E402

transformers.utils.logging.disable_progress_bar()  # the loop shows its own progress
transformers.utils.logging.set_verbosity_error()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """"float32", "bfloat16" (or "bf16"), "float16" (or "fp16") as a torch dtype; DataError otherwise."""
    if name not in DTYPES:
        raise DataError(f"unknown dtype {name!r}; known: float32, bfloat16, float16")
    return DTYPES[name]


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_model_dir(path: str | Path) -> Path:
    """`path` as a Path when it holds a whole checkpoint (config.json); DataError saying what is
    there instead (LoRA adapters only, or nothing), before anything is loaded or written."""
    path = Path(path)
    if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        raise DataError(f"{path}: LoRA adapters only, not a whole model: apply them to the model they were trained "
                        f"from (peft), or use the merged model the training saved at its end")
    if not (path / "config.json").exists():
        raise DataError(f"{path}: no model here (config.json missing)")
    return path


def model_type(path: str | Path) -> str | None:
    """The `model_type` of the checkpoint at `path` (its config.json), None when that cannot be read."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


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

        path = check_model_dir(path)
        kind = model_type(path)
        if kind not in FAMILIES:
            raise DataError(f"{path}: model type {kind!r} is not supported yet (supported: {', '.join(FAMILIES.names())})")
        if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            raise DataError(f"{path}: weights but no tokenizer or processor files (a training checkpoint?): copy "
                            f"tokenizer*, processor_config.json and chat_template.* from the model it was trained from")
        family = FAMILIES.get(kind)
        try:
            processor = AutoProcessor.from_pretrained(path)
        except (AttributeError, ImportError, OSError, ValueError):
            if not family.image_only_processor:
                raise
            processor = image_only_processor(family).from_pretrained(path)  # no torchvision here
        if getattr(processor, "chat_template", None) is None and family.chat_template is not None:
            # the template from the processor, else the tokenizer's (where many checkpoints keep it), else the family's
            processor.chat_template = getattr(processor.tokenizer, "chat_template", None) or family.chat_template
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype or torch.float32)
        return cls(model, processor, device)

    def save(self, path: str | Path) -> None:
        """Weights (safetensors) and processor into `path`, written under a temporary folder and moved in
        with config.json last: a kill at any moment leaves no folder that looks like a model."""
        import shutil
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / ".saving"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, safe_serialization=True)
        self.processor.save_pretrained(tmp)
        files = sorted(tmp.iterdir(), key=lambda f: f.name == "config.json")
        # transformers writes the weights owner-only (0600); a model folder is shared like any other file
        mode = 0o666 & ~_umask()
        for f in files:
            os.chmod(f, mode)
            os.replace(f, path / f.name)
        tmp.rmdir()

    # ---- prompts and encodings ----
    @property
    def kind(self) -> str:
        return self.model.config.model_type

    @property
    def family(self) -> Family:
        return FAMILIES.get(self.kind)

    @property
    def _cache_arg(self) -> str:
        """The forward argument that takes a KV cache: `cache` in recent transformers, `past_key_values` before."""
        import inspect
        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    @property
    def input_side(self) -> int | None:
        """The side, in pixels, the processor resizes images to (for decoding large pictures small)."""
        ip = self.processor.image_processor
        for size in (getattr(ip, "crop_size", None), getattr(ip, "size", None)):
            if size is None:
                continue
            get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)  # noqa: E731 - a dict or a SizeDict
            side = get("height") or get("shortest_edge") or get("longest_edge")
            if side:
                return int(side)
        return None

    def prompt(self, question: str) -> str:
        # an image placeholder inside the text (LLaVA data carries "<image>") would be a second image
        # the model is not given: stripped, as LLaVA's own preprocessing does
        for token in {"<image>", getattr(self.processor, "image_token", None) or "<image>"}:
            question = question.replace(token, "")
        question = question.strip()
        if self.family.chat_template is None:
            return question  # no chat format (PaliGemma): the processor puts the image tokens and BOS first
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    @property
    def question_first(self) -> bool:
        """Whether the chat template shows the question before the image (the tiny model's layout;
        LLaVA's own and most checkpoints' put the image first). In a multi-round conversation the
        image then follows the first question only, and the later ones come after it."""
        probe = "Which shape is it?"
        text = self.prompt(probe)
        image = getattr(self.processor, "image_token", None) or "<image>"
        return image in text and text.index(probe) < text.index(image)

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def encode_prompts(self, questions: list[str], images: list[Image.Image]) -> Prompts:
        """Prompt token ids (image placeholder expanded as the model expects), their per-token type ids,
        and the model's image inputs (pixel_values, image_sizes, image_grid_thw, ...), in one call."""
        enc = self.processor(images=images, text=[self.prompt(q) for q in questions], return_tensors="pt", padding=True)
        keep = enc["attention_mask"].bool()
        rows = lambda t: [row[m].tolist() for row, m in zip(t, keep)]  # noqa: E731
        types = {k: rows(enc[k]) for k in self.family.answer_type_ids if k in enc}
        images_in = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "labels", *TYPE_ID_KEYS)}
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

    def on_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device) for k, v in inputs.items()}

    def _with_answer(self, prompts: Prompts, i: int, answer: list[int]) -> Encoded:
        prompt = prompts.ids[i]
        types = {k: v[i] + [self.family.answer_type_ids[k]] * len(answer) for k, v in prompts.types.items()}
        return Encoded(prompt + answer, [-100] * len(prompt) + answer, types)

    def prompt_length(self, question: str) -> int:
        """Tokens of a prompt with its image placeholder expanded (a blank picture of the model's size)."""
        size = getattr(self.processor.image_processor, "crop_size", None) or {"height": 64, "width": 64}
        img = Image.new("RGB", (size.get("width", 64), size.get("height", 64)))
        return len(self.encode_prompts([question], [img]).ids[0])

    def answer_format(self) -> tuple[str, str]:
        """The text the model's own format puts before and after an answer, after the generation prompt:
        what its chat template writes for an assistant turn (LLaVA: " " and "</s>"; Qwen2-VL: "" and
        "<|im_end|>\n"); PaliGemma, whose processor ends the prompt with a newline: "" and EOS."""
        if self.family.chat_template is None or getattr(self.processor, "chat_template", None) is None:
            return "", self.tokenizer.eos_token
        user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
        mark = "\x00ANSWER\x00"
        prompt = self.processor.apply_chat_template(user, add_generation_prompt=True)
        full = self.processor.apply_chat_template(user + [{"role": "assistant", "content": [{"type": "text", "text": mark}]}])
        if not full.startswith(prompt) or mark not in full:
            return " ", self.tokenizer.eos_token  # a template that does not extend its generation prompt
        before, after = full[len(prompt):].split(mark, 1)
        return before, after

    def encode_answer(self, answer: str) -> list[int]:
        """The tokens of the model saying `answer` in its own format (`answer_format`), encoded apart
        from the prompt (as lm-eval does) so every option shares the same prefix."""
        if not hasattr(self, "_answer_format"):
            self._answer_format = self.answer_format()
        before, after = self._answer_format
        return self.tokenizer(before + answer.strip() + after, add_special_tokens=False)["input_ids"]

    def encode_batch(self, questions: list[str], images: list[Image.Image], answers: list[str]) -> dict[str, torch.Tensor]:
        """A training batch: loss on the answer tokens only."""
        prompts = self.encode_prompts(questions, images)
        encoded = [self._with_answer(prompts, i, self.encode_answer(a)) for i, a in enumerate(answers)]
        return self.collate(encoded, prompts.images)

    # ---- conversations (several turns about one image) ----
    def _clean(self, text: str) -> str:
        for token in {"<image>", getattr(self.processor, "image_token", None) or "<image>"}:
            text = text.replace(token, "")
        return text.strip()

    def chat_text(self, turns: list[tuple[str, str | None]]) -> str:
        """A conversation in the family's chat template, the image once in the first user turn; a last
        turn with no answer (None) ends in the generation prompt."""
        messages = []
        for j, (user, answer) in enumerate(turns):
            content = ([{"type": "image"}] if j == 0 else []) + [{"type": "text", "text": self._clean(user)}]
            messages.append({"role": "user", "content": content})
            if answer is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer.strip()}]})
        return self.processor.apply_chat_template(messages, add_generation_prompt=turns[-1][1] is None)

    def encode_conversations(self, images: list[Image.Image], conversations: list[list[tuple[str, str | None]]]
                             ) -> tuple[list[Encoded], dict[str, torch.Tensor]]:
        """Conversations (one image each; turns of (user, answer), the last answer None to be generated)
        as token ids with labels on every assistant turn's tokens (what the template writes from the
        generation prompt to the end of the turn, as `encode_answer` does for one answer) and -100 on
        every other token, plus the image inputs. The spans come from rendering each prefix of the
        conversation with the chat template; a template whose prefixes do not tokenize as prefixes of
        the whole is a DataError. Families with no chat format (PaliGemma) continue the prompt with
        each answer and EOS, then the next question and a newline, all causal."""
        if self.family.chat_template is None or getattr(self.processor, "chat_template", None) is None:
            return self._encode_plain_conversations(images, conversations)
        texts = [self.chat_text(c) for c in conversations]
        enc = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        keep = enc["attention_mask"].bool()
        tok = lambda t: self.tokenizer(t)["input_ids"]  # noqa: E731 - as the processor tokenizes, before image expansion
        out = []
        for i, turns in enumerate(conversations):
            ids = enc["input_ids"][i][keep[i]].tolist()
            whole = tok(texts[i])
            shift = len(ids) - len(whole)  # the image placeholder's expansion, which comes before every answer
            labels = [-100] * len(ids)
            for j, (user, answer) in enumerate(turns):
                if answer is None:
                    continue
                before, through = tok(self.chat_text(turns[:j] + [(user, None)])), tok(self.chat_text(turns[:j + 1]))
                if whole[:len(before)] != before or whole[:len(through)] != through:
                    raise DataError(f"{self.kind}: the chat template's turn {j + 1} does not tokenize as a prefix of the "
                                    f"whole conversation; its assistant tokens cannot be found")
                labels[len(before) + shift:len(through) + shift] = ids[len(before) + shift:len(through) + shift]
            types = {k: enc[k][i][keep[i]].tolist() for k in self.family.answer_type_ids if k in enc}
            out.append(Encoded(ids, labels, types))
        images_in = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "labels", *TYPE_ID_KEYS)}
        return out, images_in

    def _encode_plain_conversations(self, images, conversations):
        prompts = self.encode_prompts([c[0][0] for c in conversations], images)
        out = []
        for i, turns in enumerate(conversations):
            ids = list(prompts.ids[i])
            labels = [-100] * len(ids)
            types = {k: list(v[i]) for k, v in prompts.types.items()}
            for j, (user, answer) in enumerate(turns):
                pieces = []
                if j > 0:
                    pieces.append((self.tokenizer(self._clean(user) + "\n", add_special_tokens=False)["input_ids"], False))
                if answer is not None:
                    pieces.append((self.encode_answer(answer), True))
                for part, learn in pieces:
                    ids += part
                    labels += part if learn else [-100] * len(part)
                    for k in types:
                        types[k] += [self.family.answer_type_ids[k]] * len(part)  # after the first prompt, all causal
            out.append(Encoded(ids, labels, types))
        return out, prompts.images

    def encode_conversation_batch(self, images: list[Image.Image], conversations: list[list[tuple[str, str]]]) -> dict[str, torch.Tensor]:
        """A training batch of conversations: loss on every assistant turn, on no user turn."""
        encoded, images_in = self.encode_conversations(images, conversations)
        return self.collate(encoded, images_in)

    @torch.no_grad()
    def generate_chat(self, items: list[tuple[Image.Image, list[tuple[str, str | None]]]], max_new_tokens: int = 16) -> list[str]:
        """The next answer of each conversation (its last turn's answer None), greedy; earlier answers
        are given as they are (a dialog feeds the model's own back)."""
        self.model.eval()
        encoded, images_in = self.encode_conversations([img for img, _ in items], [turns for _, turns in items])
        batch = self.collate(encoded, images_in, left=True)
        batch.pop("labels")
        width, pad = batch["input_ids"].shape[1], self.tokenizer.pad_token_id
        out = self.model.generate(**self.on_device(batch), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]

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
            shared_prefix = self.family.shared_prefix
        if shared_prefix:
            return self._score_shared(items, reduce)
        prompts = self.encode_prompts([q for _, q, _ in items], [img for img, _, _ in items])
        encoded = [self._with_answer(prompts, i, self.encode_answer(o)) for i, (_, _, opts) in enumerate(items) for o in opts]
        sizes = [len(opts) for _, _, opts in items]
        owner = torch.repeat_interleave(torch.arange(len(items)), torch.tensor(sizes))
        batch = self.collate(encoded, self.select_images(prompts.images, owner))
        batch = self.on_device(batch)
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
        first_pos = self.family.first_position
        pos = (mask.cumsum(-1) - 1).clamp(min=0) + first_pos
        dev = self.device
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         **self.on_device(batch), use_cache=True)
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
        cache = out.cache if "cache" in out else out.past_key_values  # transformers 5.2x renamed it
        cache.batch_select_indices(owner.to(dev))
        opt_pos = mask.sum(-1)[owner].unsqueeze(1) + torch.arange(longest) + first_pos
        logits = self.model(input_ids=opt.to(dev), attention_mask=torch.cat([mask[owner], opt_mask], 1).to(dev),
                            position_ids=opt_pos.to(dev), use_cache=False, **{self._cache_arg: cache}).logits.float()
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
        out = self.model.generate(**self.on_device(batch), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def image_only_processor(family: Family):
    """Qwen2-VL's processor class without its video half, whose processor needs torchvision (absent
    from CPU-only installs; a CUDA torchvision does not load on a CPU torch). It saves under the
    original class's name, so a checkpoint written here loads anywhere with `AutoProcessor`."""
    from transformers.processing_utils import ProcessorMixin
    base = getattr(transformers, family.image_only_processor)

    class ImageOnly(base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token, self.video_token_id = "<|video_pad|>", None
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnly.__name__ = ImageOnly.__qualname__ = base.__name__
    return ImageOnly
