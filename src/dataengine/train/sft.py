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

from ..errors import DataError
from ..images import load_image
from ..models.vlm import VLM
from ..records import Sample, write_json
from .config import TrainConfig


class SampleDataset(Dataset):
    def __init__(self, samples: list[Sample], image_root: Path, max_side: int | None = None):
        self.samples, self.image_root, self.max_side = samples, Path(image_root), max_side

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        return s, load_image(self.image_root, s.image, where=f"sample {s.id}", max_side=self.max_side)


class Collator:
    def __init__(self, vlm: VLM, target: str):
        self.vlm, self.target = vlm, target

    def __call__(self, batch: list[tuple[Sample, Image.Image]]):
        return self.vlm.encode_batch([s.instruction for s, _ in batch], [img for _, img in batch],
                                     [getattr(s, self.target) for s, _ in batch])


def train(vlm: VLM, samples: list[Sample], image_root: str | Path, out_dir: str | Path,
          cfg: TrainConfig | None = None, progress: Progress | None = None) -> dict:
    """Fine-tune `vlm` in place on `samples`; save it to `out_dir`; return the loss log."""
    from transformers import Trainer, TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    if not samples:
        raise DataError(f"{out_dir}: nothing to train on (the training set is empty)")
    check_trainable(vlm, samples, cfg.target)
    set_seed(cfg.seed)  # before anything random is drawn: LoRA's adapters are initialised next
    fingerprint = _fingerprint(vlm, samples, cfg)
    model, family = vlm.model, vlm.family
    for name, p in model.named_parameters():
        if family.is_vision(name):
            p.requires_grad_(not cfg.freeze_vision)
    if cfg.lora:
        from peft import LoraConfig as PeftLora
        from peft import get_peft_model
        # A regex, so the vision tower's attention (also q_proj/k_proj/v_proj) gets no adapter, as in LLaVA.
        target = family.lora_targets(cfg.lora.target_modules)
        projector = sorted({m.group(2) for n, _ in model.named_parameters() if (m := re.search(family.projector, n))})
        model = get_peft_model(model, PeftLora(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                               target_modules=target,
                                               modules_to_save=projector if cfg.lora.train_projector else None))
    world = int(os.environ.get("WORLD_SIZE", "1"))  # processes under torchrun share each step's batch
    steps = math.ceil(len(samples) / (cfg.batch_size * cfg.grad_accum * world) * cfg.epochs)
    losses: list[float] = []

    class Log(TrainerCallback):
        task = progress.add_task("train", total=steps) if progress else None

        def on_step_end(self, args, state, control, **kw):
            if progress:
                progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

        def on_save(self, args, state, control, **kw):
            # every checkpoint loadable on its own: the processor (tokenizer, template) beside its weights
            if state.is_world_process_zero:
                vlm.processor.save_pretrained(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    args = training_args(cfg, out_dir, steps, vlm.device)
    random.Random(cfg.seed).shuffle(samples := list(samples))
    trainer = Trainer(model=model, args=args, train_dataset=SampleDataset(samples, Path(image_root), 2 * vlm.input_side if vlm.input_side else None),
                      data_collator=Collator(vlm, cfg.target), callbacks=[Log()], optimizers=(_optimizer(model, cfg, family), None))
    trainer.remove_callback(PrinterCallback)  # our progress bar and train_log.json replace its prints
    torch.manual_seed(cfg.seed)
    resume = _last_checkpoint(out_dir / "trainer") if cfg.save_steps else None
    _check_resume(out_dir / "trainer", fingerprint, resume)
    if resume and not cfg.lora:
        _restore_weights(model, resume)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = round(time.perf_counter() - started, 1)
    if cfg.lora:
        vlm.model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        vlm.save(out_dir)
        log = {"steps": steps, "samples": len(samples), "losses": losses, "seconds": seconds}
        write_json(out_dir / "train_log.json", log)
        shutil.rmtree(out_dir / "trainer", ignore_errors=True)  # the checkpoints served their purpose; they are large
    return {"steps": steps, "samples": len(samples), "losses": losses, "seconds": seconds}


def check_trainable(vlm: VLM, samples: list[Sample], target: str) -> None:
    """The rules every item must meet to be trained on (the filter's, for what training reads): a
    question, a non-empty target, a picture, and a length the language model can take (image tokens
    included). DataError naming the item otherwise, before any step is taken."""
    limit = getattr(vlm.model.config.get_text_config(), "max_position_embeddings", None)
    fixed = None
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


def _fingerprint(vlm: VLM, samples: list[Sample], cfg: TrainConfig) -> dict:
    """What a training is: its starting weights, its data and its settings (for checking a resume)."""
    import hashlib
    weights = hashlib.sha1()
    for _, p in list(vlm.model.named_parameters())[:4]:
        weights.update(p.detach().float().cpu().numpy().tobytes())
    data = hashlib.sha1("\n".join(s.model_dump_json() for s in samples).encode()).hexdigest()
    settings = cfg.model_dump(mode="json", exclude={"save_steps"})
    return {"model": weights.hexdigest(), "data": data, "settings": settings}


def _check_resume(folder: Path, fingerprint: dict, resume: str | None) -> None:
    """A checkpoint is resumed only by the training that wrote it: the same starting model, data and
    settings. Another's is refused in one line (its weights, optimizer and data position would
    silently take over)."""
    import json
    record = folder / "run.json"
    if resume and record.exists():
        old = json.loads(record.read_text())
        diff = [k for k in ("model", "data", "settings") if old.get(k) != fingerprint[k]]
        if diff:
            what = {"model": "another starting model", "data": "other data", "settings": "other settings"}
            raise DataError(f"{folder}: holds the checkpoints of a training with {', '.join(what[k] for k in diff)}; "
                            f"remove the folder or train into another --out")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(record, fingerprint)


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _restore_weights(model, checkpoint: str) -> None:
    """The Trainer reloads a checkpoint with `load_state_dict`, which misses the key renaming that
    `from_pretrained` applies to saved VLMs, and so would resume from the untrained weights."""
    saved = type(model).from_pretrained(checkpoint, dtype=model.dtype)
    model.load_state_dict(saved.state_dict())


def training_args(cfg: TrainConfig, out_dir: Path, steps: int, device: str):
    from transformers import TrainingArguments

    world = int(os.environ.get("WORLD_SIZE", "1"))
    # recent transformers renamed gradient checkpointing
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return TrainingArguments(
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
        **{checkpointing: cfg.gradient_checkpointing},
    )


def _optimizer(model, cfg: TrainConfig, family) -> torch.optim.Optimizer:
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

