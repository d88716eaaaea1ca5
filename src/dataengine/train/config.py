"""Training settings: one config for supervised fine-tuning (full or LoRA), and the papers' presets.

Imports nothing heavy, so a run's config is checked without loading torch.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..registry import Registry


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]  # in the language model only
    train_projector: bool = True  # LLaVA trains the projector fully beside the LoRA adapters


# The papers' settings, by name. A preset fills every field the config does not set itself.
PRESETS: Registry[dict] = Registry("preset")
for _name, _fields in {
    # LLaVA-1.5 LoRA fine-tuning: r 128, alpha 256, lr 1e-4 with the projector at 2e-5, cosine, warmup 3%, 1 epoch.
    "llava-1.5-lora": {"epochs": 1.0, "lr": 1e-4, "vision_lr": 2e-5, "scheduler": "cosine", "warmup_ratio": 0.03,
                       "freeze_vision": True, "weight_decay": 0.0,
                       "lora": {"r": 128, "alpha": 256, "dropout": 0.05,
                                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}},
    # LLaVA-1.5 full fine-tuning of the language model and projector, vision tower frozen.
    "llava-1.5-full": {"epochs": 1.0, "lr": 2e-5, "scheduler": "cosine", "warmup_ratio": 0.03, "freeze_vision": True,
                       "weight_decay": 0.0, "lora": None},
    # MiniGPT-4 (v2) style LoRA: r 64, alpha 16 on the attention projections.
    "minigpt4-lora": {"epochs": 1.0, "lr": 1e-4, "scheduler": "cosine", "warmup_ratio": 0.03, "freeze_vision": True,
                      "lora": {"r": 64, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}},
}.items():
    PRESETS.register(_name, _fields)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: str | None = None  # one of PRESETS; the fields given beside it win
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    vision_lr: float | None = None  # vision tower and projector; None: same as lr
    freeze_vision: bool = False  # keep the vision tower as it is (LLaVA-1.5 does)
    # Weight of train/grounding.py's loss: heads look at the objects the question names (0: off). A
    # training aid for the embedded tiny model, whose language model starts from random weights;
    # needs the images' annotations and LLaVA's one image token per patch.
    ground_attention: float = Field(0.0, ge=0)
    lora: LoraConfig | None = None  # None: full fine-tuning
    target: str = "short_answer"  # what the model learns to say: "short_answer" or "answer"
    sampling: str = "random"  # "sequential" keeps our seeded shuffle as the order (same batches on 1 or N processes)
    # For models too large for one GPU, passed to the Trainer as they are: a DeepSpeed JSON file, or
    # FSDP on, with its config (a JSON file or a dict: version, cpu_offload, min_num_params, ...).
    deepspeed: str | None = None
    fsdp: bool = False
    fsdp_config: str | dict | None = None
    gradient_checkpointing: bool = False
    bf16: bool = False
    # Every this many steps a checkpoint (model, optimizer, scheduler, data position) goes to
    # out/trainer/; a run stopped midway resumes from the last one. 0: none (short rounds).
    save_steps: int = 0
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def apply_preset(cls, data):
        if isinstance(data, dict) and data.get("preset"):
            return PRESETS.get(PRESETS.check(data["preset"])) | data
        return data


class DPOTrainConfig(TrainConfig):
    """Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) on preference pairs,
    with HA-DPO's settings (arXiv 2311.16839): beta 0.1, the frozen starting model as the reference
    (under LoRA, the same model with its adapters disabled), the vision tower frozen, and an
    optional SFT term on the chosen side (`sft_weight`, HA-DPO's gamma; 0.5 in its MiniGPT-4 recipe)."""
    beta: float = Field(0.1, gt=0)
    sft_weight: float = Field(0.0, ge=0)
    freeze_vision: bool = True
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    epochs: float = Field(2.0, gt=0)
