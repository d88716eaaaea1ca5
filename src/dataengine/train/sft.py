"""Train: fine-tune the model (full or LoRA) on the original data plus the incremental data.

Uses the `transformers` Trainer, so `accelerate launch` / `torchrun` runs it on several GPUs (or CPU
processes over gloo) unchanged; a DeepSpeed or FSDP config (`deepspeed`, `fsdp`, `fsdp_config`) goes
to the Trainer as it is.
The loss is on answer tokens only. The result is saved as safetensors with its processor, so the next
round (or any other tool) loads it as a plain checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import re
import shutil
import time
from pathlib import Path

import torch
from PIL import Image
from rich.progress import Progress
from torch.utils.data import Dataset
from transformers import TrainerCallback

from ..errors import DataError
from ..images import load_image
from ..models.vlm import VLM
from ..dialog.conversation import Conversation
from ..records import ImageAnnotation, Sample, differs, write_json
from .config import LoraConfig, TrainConfig
from .grounding import attention_loss, grounding_targets, named_patches


class SampleDataset(Dataset):
    def __init__(self, samples: list[Sample], image_root: Path, max_side: int | None = None):
        self.samples, self.image_root, self.max_side = samples, Path(image_root), max_side

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        return s, load_image(self.image_root, s.image, where=f"sample {s.id}", max_side=self.max_side)


class Collator:
    """A training batch; with `annotations` (image path -> its annotation), also "grounding": the
    patches of the objects each question names (train/grounding.py)."""

    def __init__(self, vlm: VLM, target: str, annotations: dict[str, ImageAnnotation] | None = None):
        self.vlm, self.target, self.annotations = vlm, target, annotations

    def __call__(self, batch: list[tuple[Sample, Image.Image]]):
        if isinstance(batch[0][0], Conversation):  # every assistant turn learned, no user turn
            return self.vlm.encode_conversation_batch([img for _, img in batch], [c.pairs() for c, _ in batch])
        enc = self.vlm.encode_batch([s.instruction for s, _ in batch], [img for _, img in batch],
                                    [getattr(s, self.target) for s, _ in batch])
        if self.annotations is not None:
            config = self.vlm.model.config
            grid = config.vision_config.image_size // config.vision_config.patch_size
            tok = self.vlm.processor.tokenizer
            phrases = [[(tok(" " + name, add_special_tokens=False)["input_ids"], p)
                        for name, p in grounded_phrases(self.annotations.get(s.image), s, grid)] for s, _ in batch]
            enc["grounding"] = grounding_targets(enc["input_ids"], enc["labels"], config.image_token_index,
                                                 config.get_text_config().num_attention_heads, grid, phrases)
        return enc


def grounded_trainer(weight: float):
    """The Trainer with `weight` x `grounding.attention_loss` added to the language-modelling loss,
    on batches that carry "grounding"."""
    from transformers import Trainer

    class GroundedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("grounding", None)
            if targets is None or not targets.any():
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # as the Trainer's own compute_loss: with gradient accumulation the model scales its loss by
            # the items of all the accumulated batches, and the Trainer then does not divide it
            scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
            outputs = model(**inputs, output_attentions=True, **({"num_items_in_batch": num_items_in_batch} if scaled else {}))
            loss = outputs.loss
            extra = attention_loss(outputs.attentions, targets.to(loss.device))
            if extra is not None:
                loss = loss + weight * extra / (self.args.gradient_accumulation_steps if scaled else 1)
            return (loss, outputs) if return_outputs else loss

    return GroundedTrainer


def train(vlm: VLM, samples: list[Sample] | list[Conversation], image_root: str | Path, out_dir: str | Path,
          cfg: TrainConfig | None = None, progress: Progress | None = None,
          annotations: list[ImageAnnotation] | None = None) -> dict:
    """Fine-tune `vlm` in place on `samples` (items, trained on `cfg.target`; or conversations, trained
    on every assistant turn); save it to `out_dir`; return the loss log. `annotations`: the images'
    annotations, which `cfg.ground_attention` needs (DataError without them)."""
    from transformers import Trainer, set_seed
    from transformers.trainer_callback import PrinterCallback

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    if not samples:
        raise DataError(f"{out_dir}: nothing to train on (the training set is empty)")
    check_trainable(vlm, samples, cfg.target)
    set_seed(cfg.seed)  # before anything random is drawn: LoRA's adapters are initialised next
    identity = fingerprint(vlm, samples, cfg)
    model, family = vlm.model, vlm.family
    for name, p in model.named_parameters():
        if family.is_vision(name):
            p.requires_grad_(not cfg.freeze_vision)
    if cfg.lora:
        model = with_lora(model, family, cfg.lora)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # processes under torchrun share each step's batch
    steps = math.ceil(len(samples) / (cfg.batch_size * cfg.grad_accum * world) * cfg.epochs)
    log = StepLog(vlm, steps, progress)
    args = training_args(cfg, out_dir, steps, vlm.device)
    random.Random(cfg.seed).shuffle(samples := list(samples))
    grounded = None
    if cfg.ground_attention:
        grounded = check_grounding(vlm, samples, annotations, out_dir)
    if grounded is not None:
        attention = vlm.model.config._attn_implementation
        vlm.model.set_attn_implementation("eager")  # the fused kernels return no attention weights
    cls = grounded_trainer(cfg.ground_attention) if grounded is not None else Trainer
    trainer = cls(model=model, args=args, train_dataset=SampleDataset(samples, Path(image_root), 2 * vlm.input_side if vlm.input_side else None),
                  data_collator=Collator(vlm, cfg.target, grounded), callbacks=[log], optimizers=(param_groups_optimizer(model, cfg, family), None))
    trainer.remove_callback(PrinterCallback)  # our progress bar and train_log.json replace its prints
    try:
        seconds = run_trainer(trainer, model, cfg, out_dir, identity)
    finally:
        if grounded is not None:
            vlm.model.set_attn_implementation(attention)
    return finish(vlm, model, trainer, out_dir, {"steps": steps, "samples": len(samples), "losses": log.losses, "seconds": seconds})


def check_grounding(vlm: VLM, samples: list, annotations: list[ImageAnnotation] | None, out_dir: Path) -> dict[str, ImageAnnotation] | None:
    """What `train.ground_attention` needs, before any step: single items, a LLaVA-layout model (one
    image token per patch), and annotations of the items' images. Returns them by image path, or
    None when no item has a phrase to ground (`grounded_phrases`: captions, region descriptions):
    then there is nothing to ground, and the plain trainer keeps the fused attention. DataError
    otherwise."""
    config = vlm.model.config
    if not (hasattr(config, "image_token_index") and hasattr(getattr(config, "vision_config", None), "image_size")):
        raise DataError(f"{out_dir}: train.ground_attention needs LLaVA's layout (one image token per patch); "
                        f"this model is {vlm.family.name}")
    if annotations is None or isinstance(samples[0], Conversation):
        raise DataError(f"{out_dir}: train.ground_attention needs single items and their images' annotations "
                        "(the embedded world's, or a pool with boxes)")
    by_image = {a.image: a for a in annotations}
    if not any(s.image in by_image for s in samples):
        raise DataError(f"{out_dir}: train.ground_attention: no item's image has an annotation "
                        f"(e.g. {samples[0].image}; the annotations name {next(iter(by_image), 'none')})")
    grid = config.vision_config.image_size // config.vision_config.patch_size
    if not any(grounded_phrases(by_image.get(s.image), s, grid) for s in samples):
        return None
    return by_image


def grounded_phrases(ann: ImageAnnotation | None, sample: Sample, grid: int) -> list[tuple[str, list[int]]]:
    """The phrases of `sample`'s question that grounding holds heads on, with their patches
    (`named_patches`): none without the image's annotation, nor on a picture of one thing, which
    needs no lookup (grounding there teaches nothing and dilutes the loss)."""
    if ann is None or len(ann.objects) + len(ann.texts) <= 1:
        return []
    return named_patches(ann, sample.instruction, grid)


def run_trainer(trainer, model, cfg: TrainConfig, out_dir: Path, identity: dict) -> float:
    """Train, resuming from the last checkpoint under out_dir/trainer when it is this training's
    (`check_resume`; DataError otherwise); returns the seconds it took."""
    torch.manual_seed(cfg.seed)
    resume = last_checkpoint(out_dir / "trainer") if cfg.save_steps else None
    check_resume(out_dir / "trainer", identity, resume)
    if resume and not cfg.lora:
        restore_weights(model, resume)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    return round(time.perf_counter() - started, 1)


def with_lora(model, family, lora: LoraConfig):
    """`model` with LoRA adapters on the language model's layers (`lora.target_modules`), and the
    projector trained fully beside them when `lora.train_projector` (as LLaVA does)."""
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model
    # A regex, so the vision tower's attention (also q_proj/k_proj/v_proj) gets no adapter, as in LLaVA.
    target = family.lora_targets(lora.target_modules)
    projector = sorted({m.group(2) for n, _ in model.named_parameters() if (m := re.search(family.projector, n))})
    return get_peft_model(model, PeftLora(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target,
                                          modules_to_save=projector if lora.train_projector else None))


class StepLog(TrainerCallback):
    """Progress per step, the logged losses (and, for DPO, its reward figures), and the processor
    saved beside every checkpoint so each one loads on its own."""

    def __init__(self, vlm: VLM, steps: int, progress: Progress | None = None, keys: tuple[str, ...] = ()):
        self.vlm, self.progress, self.keys = vlm, progress, keys
        self.task = progress.add_task("train", total=steps) if progress else None
        self.losses: list[float] = []
        self.figures: dict[str, list[float]] = {k: [] for k in keys}

    def on_train_begin(self, args, state, control, **kw):
        # a resumed run starts from its checkpoint's state: its log so far is part of this run's log
        for logs in state.log_history:
            self.on_log(args, state, control, logs=logs)

    def on_step_end(self, args, state, control, **kw):
        if self.progress:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
            for k in self.keys:
                if k in logs:
                    self.figures[k].append(float(logs[k]))

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            self.vlm.processor.save_pretrained(Path(args.output_dir) / f"checkpoint-{state.global_step}")


def finish(vlm: VLM, model, trainer, out_dir: Path, log: dict) -> dict:
    """After training `model` (vlm's, or it with LoRA adapters): adapters merged back, the model and
    train_log.json saved (by the first process), the checkpoints removed (they served their purpose;
    they are large). Returns `log`."""
    from peft import PeftModel
    if isinstance(model, PeftModel):
        vlm.model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        vlm.save(out_dir)
        write_json(out_dir / "train_log.json", log)
        shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    return log


def check_trainable(vlm: VLM, samples: list[Sample], target: str) -> None:
    """The rules every item must meet to be trained on (the filter's, for what training reads): a
    question, a non-empty target, a picture, and a length the language model can take (image tokens
    included). DataError naming the item otherwise, before any step is taken."""
    limit = getattr(vlm.model.config.get_text_config(), "max_position_embeddings", None)
    fixed = None
    if samples and isinstance(samples[0], Conversation):
        return check_conversations(vlm, samples, limit)
    for s in samples:
        where = f"sample {s.id}"
        if not s.instruction.strip():
            raise DataError(f"{where}: empty question")
        if not str(getattr(s, target, "")).strip():
            raise DataError(f"{where}: empty {target.replace('_', ' ')}: nothing to learn to say")
        if not s.image.strip():
            raise DataError(f"{where}: no image (items without a picture are not supported)")
        if limit:
            if fixed is None:  # the prompt's own tokens: template and image tokens, measured once
                fixed = vlm.prompt_length("")
            n = fixed + len(vlm.tokenizer(s.instruction, add_special_tokens=False)["input_ids"]) + \
                len(vlm.encode_answer(getattr(s, target)))
            if n > limit:
                raise DataError(f"{where}: {n} tokens with its image, more than the model's {limit}")


def check_conversations(vlm: VLM, conversations: list[Conversation], limit: int | None) -> None:
    """`check_trainable` for conversations: every turn a question and an answer, a picture, and a
    length the language model can take (the whole conversation, image tokens included), and no item
    in two conversations."""
    from ..dialog.conversation import check_items_once
    for c in conversations:
        if not isinstance(c, Conversation):
            raise DataError(f"conversation {c.id}: conversations and single items cannot be trained together")
        if not c.image.strip():
            raise DataError(f"conversation {c.id}: no image (items without a picture are not supported)")
        for t in c.turns:
            if not t.user.strip():
                raise DataError(f"conversation {c.id}: item {t.item}: empty question")
            if not t.assistant.strip():
                raise DataError(f"conversation {c.id}: item {t.item}: empty answer: nothing to learn to say")
    check_items_once(conversations)
    if not limit:
        return
    # encoded as training will, with a blank picture of the model's size (64 at a time)
    size = getattr(vlm.processor.image_processor, "crop_size", None) or {"height": 64, "width": 64}
    blank = Image.new("RGB", (size.get("width", 64), size.get("height", 64)))
    for i in range(0, len(conversations), 64):
        chunk = conversations[i:i + 64]
        encoded, _ = vlm.encode_conversations([blank] * len(chunk), [c.pairs() for c in chunk])
        for c, e in zip(chunk, encoded):
            if len(e.input_ids) > limit:
                raise DataError(f"conversation {c.id}: {len(e.input_ids)} tokens with its image, more than the model's "
                                f"{limit}: merge with fewer turns (merge.max_turns)")


def fingerprint(vlm: VLM, samples: list[Sample], cfg: TrainConfig) -> dict:
    """What a training is: its starting weights, its data and its settings (for checking a resume)."""
    import hashlib
    weights = hashlib.sha1()
    for _, p in list(vlm.model.named_parameters())[:4]:
        weights.update(p.detach().float().cpu().numpy().tobytes())
    data = hashlib.sha1("\n".join(s.model_dump_json() for s in samples).encode()).hexdigest()
    settings = cfg.model_dump(mode="json", exclude={"save_steps"})
    return {"model": weights.hexdigest(), "data": data, "settings": settings}


def check_resume(folder: Path, fingerprint: dict, resume: str | None) -> None:
    """A checkpoint is resumed only by the training that wrote it: the same starting model, data and
    settings. Another's is refused in one line (its weights, optimizer and data position would
    silently take over)."""
    record = folder / "run.json"
    if resume and (diff := differs(record, {k: fingerprint[k] for k in ("model", "data", "settings")})):
        what = {"model": "another starting model", "data": "other data", "settings": "other settings"}
        raise DataError(f"{folder}: holds the checkpoints of a training with {', '.join(what[k] for k in diff)}; "
                        f"remove the folder or train into another --out")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(record, fingerprint)


def last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def restore_weights(model, checkpoint: str) -> None:
    """The Trainer reloads a checkpoint with `load_state_dict`, which misses the key renaming that
    `from_pretrained` applies to saved VLMs, and so would resume from the untrained weights."""
    saved = type(model).from_pretrained(checkpoint, dtype=model.dtype)
    model.load_state_dict(saved.state_dict())


def training_args(cfg: TrainConfig, out_dir: Path, steps: int, device: str, cls=None, **extra):
    """The Trainer's arguments from a training config (`cls`: TrainingArguments or a subclass such as
    TRL's DPOConfig, given `extra` fields of its own)."""
    from transformers import TrainingArguments

    cls = cls or TrainingArguments
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # recent transformers renamed gradient checkpointing
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return cls(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        lr_scheduler_type=cfg.scheduler, warmup_steps=max(1, int(cfg.warmup_ratio * steps)), weight_decay=cfg.weight_decay,
        logging_steps=1 if cfg.save_steps else max(1, steps // 20), report_to=[], seed=cfg.seed, data_seed=cfg.seed,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500, save_total_limit=2,
        remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0,
        use_cpu=device == "cpu", train_sampling_strategy=cfg.sampling,
        # Under torchrun / accelerate launch on CPU, processes talk over gloo (nccl needs GPUs).
        ddp_backend="gloo" if device == "cpu" and world > 1 else None,
        deepspeed=cfg.deepspeed, fsdp=cfg.fsdp or None, fsdp_config=cfg.fsdp_config, bf16=cfg.bf16,
        **{checkpointing: cfg.gradient_checkpointing}, **extra,
    )


def param_groups_optimizer(model, cfg: TrainConfig, family) -> torch.optim.Optimizer:
    """AdamW, with the vision tower and projector in a group of their own (`vision_lr`), as LLaVA-style
    recipes give the projector its own learning rate."""
    vision, text = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (vision if (family.is_vision(name) or family.is_projector(name)) else text).append(p)
    groups = [{"params": text, "lr": cfg.lr}]
    if vision:
        groups.append({"params": vision, "lr": cfg.vision_lr or cfg.lr})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

