"""Training, one config and one trainer per algorithm (as TRL keeps them): supervised fine-tuning,
full or LoRA (`config.py`, `sft.py`)."""
