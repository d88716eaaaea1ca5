"""Train with Direct Preference Optimization on preference pairs (`generate/pairs.py`), through
TRL's `DPOTrainer` (Rafailov et al. 2023, arXiv 2305.18290; HA-DPO's use of it for hallucinations,
arXiv 2311.16839).

The same model families as supervised training: TRL renders each pair with the model's own chat
template and processor, which gives the same answer tokens as this project's encoding (a test
checks it per family). Like `sft.train`, it saves a plain checkpoint with its processor, writes
train_log.json, and resumes a stopped run from its last checkpoint (`save_steps`) only when that
checkpoint is of the same starting model, pairs and settings.
"""
from __future__ import annotations

import copy
import math
import os
import random
import warnings
from pathlib import Path

import torch
from rich.progress import Progress

from ..models.vlm import VLM
from .config import DPOTrainConfig
from .sft import (
    StepLog,
    fingerprint,
    finish,
    param_groups_optimizer,
    run_trainer,
    training_args,
    with_lora,
)

# What TRL logs per step that says how the preference is learnt.
FIGURES = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def train_dpo(vlm: VLM, pairs: list, image_root: str | Path, out_dir: str | Path, cfg: DPOTrainConfig | None = None,
              progress: Progress | None = None) -> dict:
    """DPO of `vlm` in place on `pairs` (PreferencePair records); the result is saved to `out_dir`.
    Returns the log: steps, pairs, losses and TRL's reward figures per logged step, seconds.
    DataError for no pairs, an empty side, a picture that does not open, or an image-conditioned
    pair whose two pictures this model processes to different sizes (naming the pair)."""
    from datasets import Dataset
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from ..generate.pairs import check_pairs, to_trl

    cfg = cfg or DPOTrainConfig()
    out_dir = Path(out_dir)
    check_pairs(pairs, image_root, str(out_dir))
    set_seed(cfg.seed)
    identity = fingerprint(vlm, pairs, cfg)
    model, family = vlm.model, vlm.family
    for name, p in model.named_parameters():
        if family.is_vision(name):
            p.requires_grad_(not cfg.freeze_vision)
    reference = None
    if cfg.lora:
        model = with_lora(model, family, cfg.lora)  # TRL disables the adapters for the reference pass
    else:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps = math.ceil(len(pairs) / (cfg.batch_size * cfg.grad_accum * world) * cfg.epochs)
    log = StepLog(vlm, steps, progress, keys=FIGURES)
    losses = ["sigmoid", "sft"] if cfg.sft_weight else ["sigmoid"]
    args = training_args(cfg, out_dir, steps, vlm.device, cls=DPOConfig, beta=cfg.beta, loss_type=losses,
                         loss_weights=[1.0, cfg.sft_weight] if cfg.sft_weight else None, max_length=None)
    random.Random(cfg.seed).shuffle(pairs := list(pairs))
    rows = to_trl(pairs, image_root)
    if two := "rejected_images" in rows[0]:  # image-conditioned pairs (mDPO)
        check_one_size(vlm, pairs, rows)
    data = Dataset.from_list(rows)
    trainer = (two_image_trainer() if two else DPOTrainer)(
        model=model, ref_model=reference, args=args, train_dataset=data, processing_class=vlm.processor,
        callbacks=[log], optimizers=(param_groups_optimizer(model, cfg, family), None),
        **({"data_collator": two_image_collator()(processor=vlm.processor)} if two else {}))
    trainer.remove_callback(PrinterCallback)
    with warnings.catch_warnings():
        # TRL reads transformers' deprecated `is_gradient_checkpointing` while it trains: not ours to mend
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        seconds = run_trainer(trainer, model, cfg, out_dir, identity)
    return finish(vlm, model, trainer, out_dir, {"steps": steps, "pairs": len(pairs), "losses": log.losses,
                                                 **log.figures, "seconds": seconds})


def check_one_size(vlm: VLM, pairs: list, rows: list[dict]) -> None:
    """Each image-conditioned pair's two pictures (in its `to_trl` row, `rows` in the order of
    `pairs`) come out of the model's image processor alike (a pair's text holds the image tokens of
    its chosen picture, and the rejected side reuses it): true where the processor resizes every
    picture to one size (LLaVA), not where the image tokens follow the picture's size (Qwen2-VL).
    DataError naming the first pair that differs, before any training."""
    from ..errors import DataError
    process = vlm.processor.image_processor
    for p, row in zip(pairs, rows):
        if not p.rejected_image:
            continue
        a, b = (process(images=row[k], return_tensors="pt") for k in ("images", "rejected_images"))
        if any(a[k].shape != b[k].shape or (k != "pixel_values" and not torch.equal(a[k], b[k])) for k in a):
            raise DataError(f"pair {p.id}: its pictures {p.image} and {p.rejected_image} give this model image inputs "
                            f"of different sizes; an image-conditioned pair needs them at one size")


def two_image_collator():
    """TRL's vision preference collator, with the rejected half of each batch shown the pair's
    "rejected_images" rather than its "images". With chosen and rejected the same text, DPO's
    sigmoid loss on such a row is mDPO's conditional preference (arXiv 2406.11839, eq. 3): the
    policy's log-ratio with the right picture against with the other one."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    class TwoImageCollator(DataCollatorForVisionPreference):
        def torch_call(self, examples):
            rejected = [e.pop("rejected_images") for e in examples]
            chosen = [e["images"] for e in examples]
            out = super().torch_call(examples)  # the batch is [chosen rows, rejected rows], each shown "images"
            # the text holds the chosen picture's image tokens, so the other picture must be processed
            # alike (train_dpo checks each pair first: check_one_size)
            pixels = self.processor.image_processor(images=[i for imgs in chosen + rejected for i in imgs], return_tensors="pt")
            out.update({k: v for k, v in pixels.items() if k in out})
            return out

    return TwoImageCollator


def two_image_trainer():
    """TRL's `DPOTrainer`, keeping the "rejected_images" column for `two_image_collator`."""
    from trl import DPOTrainer

    class TwoImageDPOTrainer(DPOTrainer):
        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "rejected_images"]

    return TwoImageDPOTrainer
